/**
 * Stage 1, plan: what each entry of an input needs — passthrough (the policy does not match it), or
 * signing under a cache key (from its stored bytes' sha256, codec settings and the signer), or, when its
 * codec cannot be read, failing / skipping (`invalid`). A release plans its inputs in order (`planRelease`),
 * each locale starting once its own input is planned: the unique keys the cache lacks are the release's
 * misses, scheduled largest first (schedule.ts) while planning goes on; inputs whose whole output the
 * locale-output tier holds are left out.
 *
 * Memory stays bounded: a release plan holds, per input, one small record per signable entry. An input
 * whose whole sha256 is wanted (tier key, audit record) is read whole into one budget lease, reused for
 * the next input; otherwise its signable entries are read one at a time through one reused buffer.
 */
import { stat } from 'node:fs/promises';
import type { ArchiveEntry, OpenedArchive } from '../archive/types.js';
import type { OutputCacheStore } from '../../cache/types.js';
import { openArchive } from '../archive/registry.js';
import type { CodecSettings } from '../codecs/types.js';
import { FileSource } from '../io/byte-source.js';
import type { SigningContext } from './context.js';
import { rangeId, readInput } from './input.js';
import { entryKey, localeOutputKey, type LocaleSettings } from './keys.js';
import { sha256Hex } from './manifest.js';
import { hashFileSha256 } from './output-cache.js';
import type { SideHasher } from './side-hash.js';

/** What planning learnt about one signable entry, so the locale does not read and hash it again. */
export interface EntryKey {
  key: string;
  codec: CodecSettings;
  codecKey: string;
  inputSha256: string;
}

/** Each entry's part in the output. */
export type EntryPlan =
  | { kind: 'passthrough'; entry: ArchiveEntry }
  | ({ kind: 'sign'; entry: ArchiveEntry } & EntryKey)
  /** Matched by the policy, but its codec cannot be read: fails the locale, or is skipped (onInvalid). */
  | { kind: 'invalid'; entry: ArchiveEntry; error: unknown };

/** A file as it was when planned: a plan of a file that changed since is not used. */
export interface FileIdentity {
  size: number;
  mtimeNs: bigint;
  ino: bigint;
  dev: bigint;
}

export async function identityOf(path: string): Promise<FileIdentity | undefined> {
  try {
    const st = await stat(path, { bigint: true });
    return { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, dev: st.dev };
  } catch {
    return undefined;
  }
}

export function sameFile(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  return !!a && !!b && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ino === b.ino && a.dev === b.dev;
}

/** One input of a release plan. */
export interface PlannedInput {
  identity: FileIdentity;
  /** The whole input's sha256, when the plan took it (for the output tier's key or the audit record). */
  sha256?: string;
  /** Entry index → key, for every signable entry with readable settings; absent when the tier holds it. */
  keys?: Map<number, EntryKey>;
}

export interface PlannedMiss {
  key: string;
  input: string;
  entry: ArchiveEntry;
  codec: CodecSettings;
  /** How many planned inputs contain this key (default 1). */
  uses?: number;
  /** Index of the first input that contains it (default 0). */
  inputIndex?: number;
}

export interface ReleasePlan {
  inputs: Map<string, PlannedInput>;
  /** Unique misses, in scheduling order. */
  misses: PlannedMiss[];
}

/** Signable entries of `archive` (policy `sign`), in index order. */
export function signableEntries(ctx: SigningContext, archive: OpenedArchive): ArchiveEntry[] {
  return archive.entries.filter((e) => ctx.policy.decide(e.name) === 'sign');
}

/**
 * The key of one signable entry from its stored bytes (digest given when already taken), or the error
 * that makes it invalid (its codec or settings cannot be read).
 */
export function keyOf(
  ctx: SigningContext,
  archive: OpenedArchive,
  entry: ArchiveEntry,
  raw: Uint8Array,
  digest?: string,
): EntryKey | { error: unknown } {
  let codec: CodecSettings;
  try {
    codec = archive.codecOf(entry, raw);
  } catch (error) {
    return { error };
  }
  const inputSha256 = digest ?? sha256Hex(raw);
  return { ...entryKey(ctx.profile, codec, inputSha256), codec, inputSha256 };
}

/**
 * Every entry's plan, from the keys already known (a release plan, or an in-memory snapshot) and, for
 * signable entries without one, their bytes read now through `read`.
 */
export async function planEntries(
  ctx: SigningContext,
  archive: OpenedArchive,
  known: Map<number, EntryKey> | undefined,
  read: (entry: ArchiveEntry) => Promise<Uint8Array>,
): Promise<EntryPlan[]> {
  const out: EntryPlan[] = [];
  for (const entry of archive.entries) {
    if (ctx.policy.decide(entry.name) !== 'sign') {
      out.push({ kind: 'passthrough', entry });
      continue;
    }
    const k = known?.get(entry.index) ?? keyOf(ctx, archive, entry, await read(entry));
    out.push('error' in k ? { kind: 'invalid', entry, error: k.error } : { kind: 'sign', entry, ...k });
  }
  return out;
}

/**
 * Keys of the signable entries of an input held whole in memory, hashed on this thread and the side
 * thread at once (`digests`: ranges already hashed while reading, by `rangeId`).
 */
export async function keysInMemory(
  ctx: SigningContext,
  archive: OpenedArchive,
  bytes: Uint8Array,
  side: SideHasher,
  digests?: Map<string, string>,
): Promise<Map<number, EntryKey>> {
  const items: { entry: ArchiveEntry; raw: Uint8Array }[] = [];
  for (const entry of signableEntries(ctx, archive))
    items.push({ entry, raw: bytes.subarray(entry.offset, entry.offset + entry.size) });
  const todo = items.filter((x) => !digests?.has(rangeId(x.entry)));
  const hashed = await side.sha256All(todo.map((x) => x.raw));
  const got = new Map(todo.map((x, i) => [x, hashed[i]!]));
  const keys = new Map<number, EntryKey>();
  for (const x of items) {
    const k = keyOf(ctx, archive, x.entry, x.raw, got.get(x) ?? digests!.get(rangeId(x.entry))!);
    if (!('error' in k)) keys.set(x.entry.index, k);
  }
  return keys;
}

/**
 * Plan a release: each input's keys and the unique keys the cache lacks (`inputKeys`). With the
 * locale-output tier (`outputs`), each input is hashed whole first and left out when its output is stored
 * (the run's `LocaleSettings` are part of that key); with an audit sink, the whole hash is kept for the
 * locale's audit record. An unreadable input is left to its locale, which reports the typed error.
 * `onMisses` gets each input's new misses as soon as it is planned, so signing starts before the plan is
 * complete; `onPlanned` lets the input's locale start.
 */
export async function planRelease(
  ctx: SigningContext,
  inputs: string[],
  onMisses?: (misses: PlannedMiss[]) => void,
  options: {
    outputs?: LocaleSettings;
    /**
     * Told when an input is planned (or left out), with the plan so far (its `inputs` grow as planning
     * goes on; `misses` is complete only once the promise resolves), so its locale may start at once.
     */
    onPlanned?: (input: string, plan: ReleasePlan) => void;
    signal?: AbortSignal;
  } = {},
): Promise<ReleasePlan> {
  const seen = new Map<string, PlannedMiss | null>();
  const misses: PlannedMiss[] = [];
  const planned = new Map<string, PlannedInput>();
  const plan: ReleasePlan = { inputs: planned, misses: [] };
  const visited = new Set<string>();
  const tier = options.outputs ? (ctx.store?.outputs ?? undefined) : undefined;
  // One buffer for the whole plan, as big as the largest signable entry: planning N locales allocates once.
  const scratch = new ScratchReader();
  // The whole input's sha256 is wanted for the output tier's key and for the audit record's input digest.
  const whole = tier !== undefined || ctx.audit !== undefined;
  for (const [inputIndex, input] of inputs.entries()) {
    // An aborted release plans no further (its locales, told below, see the abort themselves); an input
    // given twice is planned once (its first locale may already be reading the plan).
    if (options.signal?.aborted || visited.has(input)) {
      options.onPlanned?.(input, plan);
      continue;
    }
    visited.add(input);
    const identity = await identityOf(input);
    if (!identity) {
      options.onPlanned?.(input, plan);
      continue;
    }
    const p: PlannedInput = { identity };
    planned.set(input, p);
    const got = await inputKeys(
      ctx,
      input,
      identity.size,
      { whole, tier, settings: options.outputs },
      scratch,
    );
    if (got.sha256) p.sha256 = got.sha256;
    if (got.stored) {
      options.onPlanned?.(input, plan);
      continue;
    }
    const before = misses.length;
    const { keys, entries } = got;
    p.keys = keys;
    for (const [index, k] of keys) {
      const prior = seen.get(k.key);
      if (prior !== undefined) {
        if (prior && prior.input !== input) prior.uses = (prior.uses ?? 1) + 1;
        continue;
      }
      if (ctx.store?.presence && (await ctx.store.presence.has(k.key))) {
        seen.set(k.key, null);
        continue;
      }
      const entry = entries.get(index)!;
      const m: PlannedMiss = { key: k.key, input, entry, codec: k.codec, uses: 1, inputIndex };
      seen.set(k.key, m);
      misses.push(m);
    }
    // Called even without new misses: `uses` of earlier ones may have changed their order.
    onMisses?.(sortForScheduling(misses.slice(before)));
    options.onPlanned?.(input, plan);
  }
  plan.misses = sortForScheduling(misses);
  return plan;
}

/** What planning learnt about one input. */
interface InputKeys {
  /** The whole file's sha256, when it was wanted and could be taken. */
  sha256?: string;
  /** The locale-output tier holds this input's output: its entries were not planned. */
  stored?: true;
  keys: Map<number, EntryKey>;
  entries: Map<number, ArchiveEntry>;
}

/**
 * One input's keys and, when `whole` (the output tier's key, the audit record), its whole sha256. With
 * room in the budget the file is read once, whole, into shared memory (input.ts) and hashed there on two
 * threads (`keysFromMemory`); without room, or when that fails (the file changed or cannot be read, the
 * tier cannot answer), as before: the tier's key hashed from the file in chunks, the entries read one at a
 * time. An input the tier holds is not keyed.
 */
async function inputKeys(
  ctx: SigningContext,
  input: string,
  size: number,
  want: { whole: boolean; tier: OutputCacheStore | undefined; settings: LocaleSettings | undefined },
  scratch: ScratchReader,
): Promise<InputKeys> {
  const { tier, settings } = want;
  const storedAs = async (sha256: string): Promise<boolean> =>
    !!tier && (await tier.hasOutput(localeOutputKey(ctx.profile, ctx.policy, settings!, sha256)));
  const lease = want.whole ? ctx.budget.trySharedBuffer(size) : undefined;
  if (lease) {
    let got: InputKeys | undefined;
    try {
      got = await keysFromMemory(ctx, input, lease.buffer, tier !== undefined, storedAs);
    } catch {
      // Taken again below from the file, which reports its own problem in the locale.
    } finally {
      // keysFromMemory settles only once nothing reads the buffer, failed or not: it is reused.
      lease.release();
    }
    if (got) return got;
  }
  let sha256: string | undefined;
  if (tier)
    try {
      sha256 = await hashFileSha256(input);
      if (await storedAs(sha256)) return { sha256, stored: true, keys: new Map(), entries: new Map() };
    } catch {
      // Unreadable: planned (and failed in its locale) like any input.
    }
  return { ...(sha256 ? { sha256 } : {}), ...(await keysFromFile(ctx, input, scratch)) };
}

/**
 * `inputKeys` from the file read whole into `buffer`. With the tier (`tiered`), the whole hash is taken
 * on this thread as the file comes in, and the entries' keys only once the tier has said no (most inputs
 * of a warm release are served whole), on both threads; without, the whole hash (the audit record's)
 * goes to a side thread while this thread, the busier one while locales run, takes the entries' keys.
 * Throws on any failure (the caller falls back); settles only once no digest reads `buffer`.
 */
async function keysFromMemory(
  ctx: SigningContext,
  input: string,
  buffer: Buffer,
  tiered: boolean,
  storedAs: (sha256: string) => Promise<boolean>,
): Promise<InputKeys> {
  const keys = new Map<number, EntryKey>();
  const entries = new Map<number, ArchiveEntry>();
  const source = await FileSource.open(input);
  try {
    const archive = await openArchive(source, input);
    const signable = signableEntries(ctx, archive);
    let sha256: string;
    let known: Map<number, EntryKey>;
    if (tiered) {
      const snap = await readInput(source.reopenPath, buffer, { whole: true, ranges: [], side: ctx.side });
      sha256 = snap.sha256!;
      if (await storedAs(sha256)) return { sha256, stored: true, keys, entries };
      known = await keysInMemory(ctx, archive, snap.bytes, ctx.side, snap.entryDigests);
    } else {
      const snap = await readInput(source.reopenPath, buffer, { whole: false, ranges: [] });
      const whole = ctx.side.digest(snap.bytes, 'sha256');
      whole.catch(() => undefined);
      try {
        known = new Map();
        for (const e of signable) {
          const k = keyOf(ctx, archive, e, snap.bytes.subarray(e.offset, e.offset + e.size));
          if (!('error' in k)) known.set(e.index, k);
        }
      } finally {
        await whole.catch(() => undefined);
      }
      sha256 = await whole;
    }
    for (const e of signable) {
      const k = known.get(e.index);
      if (!k) continue;
      keys.set(e.index, k);
      entries.set(e.index, e);
    }
    return { sha256, keys, entries };
  } finally {
    await source.close();
  }
}

/** The keys of a file's signable entries (and those entries), each read once through one reused buffer. */
async function keysFromFile(
  ctx: SigningContext,
  input: string,
  scratch: ScratchReader,
): Promise<{ keys: Map<number, EntryKey>; entries: Map<number, ArchiveEntry> }> {
  const keys = new Map<number, EntryKey>();
  const entries = new Map<number, ArchiveEntry>();
  let source: FileSource;
  try {
    source = await FileSource.open(input);
  } catch {
    return { keys, entries }; // the locale reports its own open error
  }
  try {
    const archive = await openArchive(source, input);
    for (const entry of signableEntries(ctx, archive)) {
      const k = keyOf(ctx, archive, entry, await scratch.read(source, entry));
      if ('error' in k) continue;
      keys.set(entry.index, k);
      entries.set(entry.index, entry);
    }
  } catch {
    // An unreadable container fails in its own locale with the typed error.
  } finally {
    await source.close();
  }
  return { keys, entries };
}

/** Reads entries into one growing scratch buffer (valid until the next read): no garbage per entry. */
class ScratchReader {
  private scratch = Buffer.alloc(0);
  read(source: FileSource, entry: ArchiveEntry): Promise<Uint8Array> {
    if (this.scratch.length < entry.size) this.scratch = Buffer.allocUnsafeSlow(entry.size);
    return source.readInto(this.scratch.subarray(0, entry.size), entry.offset);
  }
}

/**
 * Scheduling order. Entries shared by several locales gate all of them: largest first (LPT). Entries
 * of one locale only follow in locale order (largest first within a locale), so locales complete one
 * after another and their assembly overlaps the remaining signing instead of all waiting for the
 * last small entry. With a single input this is plain largest-first.
 */
export function schedulingOrder(a: PlannedMiss, b: PlannedMiss): number {
  const sa = (a.uses ?? 1) > 1;
  const sb = (b.uses ?? 1) > 1;
  if (sa !== sb) return sa ? -1 : 1;
  if (!sa && (a.inputIndex ?? 0) !== (b.inputIndex ?? 0)) return (a.inputIndex ?? 0) - (b.inputIndex ?? 0);
  return b.entry.size - a.entry.size;
}

/** Stable sort by `schedulingOrder` (ties keep plan order). */
export function sortForScheduling(misses: PlannedMiss[]): PlannedMiss[] {
  return [...misses].sort(schedulingOrder);
}
