/**
 * A container as a recipe (docs/ARCHITECTURE.md "Transfer"): its entries' stored bytes as blobs named by
 * their sha256, and everything else — headers, index, signatures, central directory, local headers — as
 * one small "skeleton" blob of the gaps between the entries, in file order. Rebuilding places the pieces
 * and checks the whole file's sha256. Nothing here is format-specific: the entry ranges come from
 * `openArchive` (`OpenedArchive.entries`: offset and size of each entry's stored bytes), so MAR and zip
 * split the same way; the bytes of entries that overlap or are empty simply stay in the skeleton.
 *
 * A recipe is JSON, itself stored as a blob; a release submitted by recipe names one per locale.
 */
import { createHash } from 'node:crypto';
import { openArchive } from '../archive/registry.js';
import type { ContainerName } from '../archive/types.js';
import { FormatError } from '../errors.js';
import type { ByteSource } from '../io/byte-source.js';

export const RECIPE_FORMAT = 'marsign-recipe';
export const RECIPE_VERSION = 1;
/** Limits on a recipe read from the network or a store (hostile input). */
export const MAX_RECIPE_BYTES = 64 * 1024 * 1024;
export const MAX_RECIPE_ENTRIES = 500_000;
/** Largest file a recipe describes (zip64 releases are far below this). */
export const MAX_RECIPE_FILE_BYTES = 64 * 1024 * 1024 * 1024;
/** Chunk read while splitting: an entry is hashed without holding it whole. */
const SPLIT_CHUNK = 4 * 1024 * 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export type RecipeErrorCode = 'RECIPE_SCHEMA' | 'RECIPE_LAYOUT' | 'RECIPE_TOO_LARGE' | 'RECIPE_DIGEST';

/** One entry's stored bytes: where they go and the blob that holds them. */
export interface RecipePart {
  offset: number;
  size: number;
  sha256: string;
}

export interface Recipe {
  format: typeof RECIPE_FORMAT;
  version: typeof RECIPE_VERSION;
  container: ContainerName;
  /** The whole file. */
  size: number;
  sha256: string;
  /** Every byte outside `entries`, concatenated in file order. */
  skeleton: { size: number; sha256: string };
  /** By offset, non-overlapping, none empty. */
  entries: RecipePart[];
}

/** A split container: its recipe and skeleton bytes (entry bytes are read again from the source when sent). */
export interface SplitContainer {
  recipe: Recipe;
  skeleton: Uint8Array;
}

function recipeError(code: RecipeErrorCode, message: string): FormatError {
  return new FormatError('recipe', code, message);
}

/**
 * Digests the caller already holds for what it splits (a signed output: the pipeline's manifest): the
 * whole file's sha256, and an entry's stored bytes' sha256 by name and size. Those ranges are not read.
 * They are claims, not checked here: a wrong one fails later, never silently (a new blob is hashed on
 * put; the client hashes every piece and the whole it rebuilds).
 */
export interface KnownDigests {
  sha256: string;
  entry(name: string, size: number): string | undefined;
}

/**
 * Split a container read from `source`: entry ranges from its format reader, each hashed as it is read
 * (in chunks) unless `known` names its digest, the gaps gathered into the skeleton, the whole hashed on
 * the way (or taken from `known`).
 */
export async function splitContainer(
  source: ByteSource,
  what = 'input',
  known?: KnownDigests,
): Promise<SplitContainer> {
  const archive = await openArchive(source, what);
  const ranges = [...archive.entries]
    .filter((e) => e.size > 0)
    .sort((a, b) => a.offset - b.offset || b.size - a.size);
  const kept: { name: string; offset: number; size: number }[] = [];
  let end = 0;
  for (const r of ranges) {
    // An entry overlapping one already kept (a hostile or odd container) stays in the skeleton.
    if (r.offset < end || r.offset + r.size > source.size) continue;
    kept.push({ name: r.name, offset: r.offset, size: r.size });
    end = r.offset + r.size;
  }
  const whole = known ? undefined : createHash('sha256');
  const gaps: Uint8Array[] = [];
  const entries: RecipePart[] = [];
  const readRange = async (offset: number, size: number, also?: ReturnType<typeof createHash>) => {
    const parts: Uint8Array[] = [];
    const readAt = (at: number) => source.read(offset + at, Math.min(SPLIT_CHUNK, size - at));
    // One chunk read ahead: the next read runs in the libuv pool while this one is hashed.
    let next = size > 0 ? readAt(0) : undefined;
    for (let at = 0; at < size;) {
      const chunk = await next!;
      const n = Math.min(SPLIT_CHUNK, size - at);
      next = at + n < size ? readAt(at + n) : undefined;
      next?.catch(() => undefined); // awaited on the next turn, or the error was this one's
      whole?.update(chunk);
      if (also) also.update(chunk);
      else parts.push(chunk);
      at += n;
    }
    return parts;
  };
  let pos = 0;
  for (const r of kept) {
    if (r.offset > pos) gaps.push(...(await readRange(pos, r.offset - pos)));
    let sha256 = known?.entry(r.name, r.size);
    if (!sha256) {
      const h = createHash('sha256');
      await readRange(r.offset, r.size, h);
      sha256 = h.digest('hex');
    }
    entries.push({ offset: r.offset, size: r.size, sha256 });
    pos = r.offset + r.size;
  }
  if (pos < source.size) gaps.push(...(await readRange(pos, source.size - pos)));
  const skeleton = Buffer.concat(gaps);
  return {
    recipe: {
      format: RECIPE_FORMAT,
      version: RECIPE_VERSION,
      container: archive.format,
      size: source.size,
      sha256: whole ? whole.digest('hex') : known!.sha256,
      skeleton: { size: skeleton.length, sha256: sha256Hex(skeleton) },
      entries,
    },
    skeleton,
  };
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The recipe's bytes as stored and sent (fixed key order: the same recipe is the same blob). */
export function encodeRecipe(r: Recipe): Uint8Array {
  const canonical: Recipe = {
    format: r.format,
    version: r.version,
    container: r.container,
    size: r.size,
    sha256: r.sha256,
    skeleton: { size: r.skeleton.size, sha256: r.skeleton.sha256 },
    entries: r.entries.map((e) => ({ offset: e.offset, size: e.size, sha256: e.sha256 })),
  };
  return Buffer.from(JSON.stringify(canonical));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function count(where: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max)
    throw recipeError(
      'RECIPE_SCHEMA',
      `${where} must be an integer in [0, ${max}], found ${JSON.stringify(v)}`,
    );
  return v;
}

function digest(where: string, v: unknown): string {
  if (typeof v !== 'string' || !SHA256_HEX.test(v))
    throw recipeError(
      'RECIPE_SCHEMA',
      `${where} must be 64 lowercase hex digits, found ${JSON.stringify(v)}`,
    );
  return v;
}

function exactKeys(where: string, o: Record<string, unknown>, keys: string[]): void {
  for (const k of Object.keys(o))
    if (!keys.includes(k))
      throw recipeError('RECIPE_SCHEMA', `${where} has an unknown field ${JSON.stringify(k)}`);
}

/**
 * Parse and check a recipe's bytes: the schema, then the layout — entries in offset order, none empty,
 * none overlapping, inside the file, and the gaps adding up to the skeleton's size. `where` names it.
 */
export function parseRecipe(bytes: Uint8Array, where = 'recipe'): Recipe {
  if (bytes.length > MAX_RECIPE_BYTES)
    throw recipeError(
      'RECIPE_TOO_LARGE',
      `${where} is ${bytes.length} bytes; a recipe is at most ${MAX_RECIPE_BYTES}`,
    );
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8'));
  } catch {
    throw recipeError('RECIPE_SCHEMA', `${where} is not JSON`);
  }
  if (!isRecord(doc)) throw recipeError('RECIPE_SCHEMA', `${where} must be a JSON object`);
  exactKeys(where, doc, ['format', 'version', 'container', 'size', 'sha256', 'skeleton', 'entries']);
  if (doc.format !== RECIPE_FORMAT || doc.version !== RECIPE_VERSION)
    throw recipeError(
      'RECIPE_SCHEMA',
      `${where} is not a ${RECIPE_FORMAT} version ${RECIPE_VERSION} (format ${JSON.stringify(doc.format)}, version ${JSON.stringify(doc.version)})`,
    );
  if (doc.container !== 'mar' && doc.container !== 'zip')
    throw recipeError(
      'RECIPE_SCHEMA',
      `${where}.container must be "mar" or "zip", found ${JSON.stringify(doc.container)}`,
    );
  const size = count(`${where}.size`, doc.size, MAX_RECIPE_FILE_BYTES);
  const sha256 = digest(`${where}.sha256`, doc.sha256);
  if (!isRecord(doc.skeleton)) throw recipeError('RECIPE_SCHEMA', `${where}.skeleton must be an object`);
  exactKeys(`${where}.skeleton`, doc.skeleton, ['size', 'sha256']);
  const skeleton = {
    size: count(`${where}.skeleton.size`, doc.skeleton.size, size),
    sha256: digest(`${where}.skeleton.sha256`, doc.skeleton.sha256),
  };
  if (!Array.isArray(doc.entries)) throw recipeError('RECIPE_SCHEMA', `${where}.entries must be an array`);
  if (doc.entries.length > MAX_RECIPE_ENTRIES)
    throw recipeError(
      'RECIPE_TOO_LARGE',
      `${where} has ${doc.entries.length} entries, more than ${MAX_RECIPE_ENTRIES}`,
    );
  let end = 0;
  let gaps = 0;
  const entries = doc.entries.map((e: unknown, i: number): RecipePart => {
    const at = `${where}.entries[${i}]`;
    if (!isRecord(e)) throw recipeError('RECIPE_SCHEMA', `${at} must be an object`);
    exactKeys(at, e, ['offset', 'size', 'sha256']);
    const offset = count(`${at}.offset`, e.offset, size);
    const n = count(`${at}.size`, e.size, size);
    if (n === 0) throw recipeError('RECIPE_LAYOUT', `${at} is empty`);
    if (offset < end)
      throw recipeError(
        'RECIPE_LAYOUT',
        `${at} starts at ${offset}, before the previous entry ends (${end})`,
      );
    if (offset + n > size)
      throw recipeError('RECIPE_LAYOUT', `${at} ends at ${offset + n}, past the file's ${size} bytes`);
    gaps += offset - end;
    end = offset + n;
    return { offset, size: n, sha256: digest(`${at}.sha256`, e.sha256) };
  });
  gaps += size - end;
  if (gaps !== skeleton.size)
    throw recipeError(
      'RECIPE_LAYOUT',
      `${where}: the gaps between its entries are ${gaps} bytes, its skeleton ${skeleton.size}`,
    );
  return {
    format: RECIPE_FORMAT,
    version: RECIPE_VERSION,
    container: doc.container,
    size,
    sha256,
    skeleton,
    entries,
  };
}

/** Every blob a recipe needs (the skeleton and each distinct entry), with sizes. */
export function recipeBlobs(r: Recipe): { sha256: string; size: number }[] {
  const seen = new Map<string, number>([[r.skeleton.sha256, r.skeleton.size]]);
  for (const e of r.entries) seen.set(e.sha256, e.size);
  return [...seen].map(([sha256, size]) => ({ sha256, size }));
}

/**
 * Rebuild a recipe's file: `write` gets every byte at its position, in file order; `blob` supplies each
 * piece (the skeleton, then entries). Each piece is hashed here against its digest unless `verified`
 * says `blob` returns only bytes already checked against it (a blob store read, a checked download);
 * its size is always checked, and the whole file is always hashed. Throws FormatError RECIPE_DIGEST when
 * a piece or the whole does not hash as the recipe says: the caller must not publish what it wrote
 * before this resolved.
 */
export async function rebuild(
  r: Recipe,
  blob: (sha256: string, size: number) => Promise<Uint8Array>,
  write: (bytes: Uint8Array, position: number) => Promise<void>,
  options: { verified?: boolean } = {},
): Promise<{ sha256: string }> {
  const whole = createHash('sha256');
  const piece = async (sha256: string, size: number): Promise<Uint8Array> => {
    const b = await blob(sha256, size);
    if (b.length !== size || (!options.verified && sha256Hex(b) !== sha256))
      throw recipeError('RECIPE_DIGEST', `blob ${sha256} does not hold the ${size} bytes the recipe names`);
    return b;
  };
  const skeleton = await piece(r.skeleton.sha256, r.skeleton.size);
  let pos = 0;
  let s = 0;
  const gap = async (until: number): Promise<void> => {
    if (until <= pos) return;
    const bytes = skeleton.subarray(s, s + (until - pos));
    whole.update(bytes);
    await write(bytes, pos);
    s += bytes.length;
    pos = until;
  };
  for (const e of r.entries) {
    await gap(e.offset);
    const bytes = await piece(e.sha256, e.size);
    whole.update(bytes);
    await write(bytes, pos);
    pos += e.size;
  }
  await gap(r.size);
  const sha256 = whole.digest('hex');
  if (sha256 !== r.sha256)
    throw recipeError('RECIPE_DIGEST', `the rebuilt file hashes to ${sha256}, the recipe says ${r.sha256}`);
  return { sha256 };
}
