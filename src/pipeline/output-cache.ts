/**
 * The locale-output tier (docs/ARCHITECTURE.md "Pipeline", "Warm locale"): a whole signed locale output
 * stored in the cache under a key over the input file's sha256 and everything that decides the output
 * (signer, MAR keys, policy, marsign version), so signing the same input again (a retried release task,
 * a re-run after one failed locale, a job re-run after a worker crash) copies the stored, verified
 * output instead of re-assembling it.
 *
 * A hit is streamed from the cache file into the output's temp file while its sha256 is checked against
 * the HMAC-authenticated header; the temp file is renamed into place only once that check passed. The
 * manifest is rebuilt from the stored entry records (signed entries become `cached`).
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { OutputCacheStore, OutputHit } from '../../cache/types.js';
import type { ContainerName } from '../archive/types.js';
import { CodedError } from '../errors.js';
import { AtomicFile } from '../io/atomic.js';
import type { Confinement } from '../io/confine.js';
import { buildManifest, writeManifest } from './report.js';
import type { EntryRecord, LocaleManifest, LocaleProgress, PipelineErrorCode } from './types.js';

/** Version of the stored manifest data (inside the entry, under the entry's own format version). 2: actions. */
const META_VERSION = 2;
/** A served output gets one early fdatasync after this many bytes (see serveOutput). */
const EARLY_SYNC_BYTES = 8 * 1024 * 1024;
/** Input hashing reads this much at a time, the next chunk in flight while one is hashed. */
const HASH_CHUNK = 1024 * 1024;

/**
 * Hex sha256 of a whole file, read in chunks so reading chunk i+1 (libuv) overlaps hashing chunk i
 * (this thread): through two reused buffers, or, with `into` (exactly the file's size), into their
 * places in `into`, which then holds the whole file (the caller keeps it for planning on a miss).
 */
export async function hashFileSha256(path: string, into?: Buffer): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (into && into.length !== size)
      throw new CodedError(
        'INPUT_CHANGED' satisfies PipelineErrorCode,
        `${path} is ${size} bytes, expected ${into.length}`,
      );
    const h = createHash('sha256');
    const bufs = into ? [] : [Buffer.allocUnsafeSlow(HASH_CHUNK), Buffer.allocUnsafeSlow(HASH_CHUNK)];
    const read = async (i: number): Promise<Buffer> => {
      const want = Math.min(HASH_CHUNK, size - i * HASH_CHUNK);
      const b = into ? into.subarray(i * HASH_CHUNK, i * HASH_CHUNK + want) : bufs[i % 2]!;
      let done = 0;
      while (done < want) {
        const { bytesRead } = await fh.read(b, done, want - done, i * HASH_CHUNK + done);
        if (bytesRead === 0)
          throw new CodedError(
            'INPUT_CHANGED' satisfies PipelineErrorCode,
            `${path} shrank while being hashed`,
          );
        done += bytesRead;
      }
      return b.subarray(0, want);
    };
    const chunks = Math.ceil(size / HASH_CHUNK);
    let next: Promise<Buffer> | undefined = chunks > 0 ? read(0) : undefined;
    try {
      for (let i = 0; i < chunks; i++) {
        const chunk = await next!;
        next = i + 1 < chunks ? read(i + 1) : undefined;
        next?.catch(() => undefined);
        h.update(chunk);
      }
    } finally {
      await next?.catch(() => undefined);
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

/** What is stored beside the output bytes: the per-entry records (without timings). */
export function encodeOutputMeta(records: EntryRecord[]): Uint8Array {
  const entries = records.map(({ ms: _ms, ...r }) => r);
  return Buffer.from(JSON.stringify({ v: META_VERSION, entries }));
}

const ACTIONS = new Set(['passthrough', 'signed', 'shared', 'cached', 'skipped-invalid']);
const CHECKS = new Set(['decoded', 'cached', 'unchecked']);

/**
 * The stored records, or undefined when they are not what this version writes (the bytes are
 * authenticated, so this only guards against a format this code does not know).
 */
export function decodeOutputMeta(bytes: Uint8Array): EntryRecord[] | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  const d = doc as { v?: unknown; entries?: unknown };
  if (typeof d !== 'object' || d === null || d.v !== META_VERSION || !Array.isArray(d.entries))
    return undefined;
  for (const e of d.entries as Partial<EntryRecord>[]) {
    if (
      typeof e !== 'object' ||
      e === null ||
      typeof e.name !== 'string' ||
      !ACTIONS.has(e.action as string) ||
      (e.flags !== undefined && typeof e.flags !== 'number') ||
      typeof e.codec !== 'string' ||
      typeof e.inputSize !== 'number' ||
      typeof e.outputSize !== 'number' ||
      typeof e.inputSha256 !== 'string' ||
      typeof e.outputSha256 !== 'string' ||
      (e.check !== undefined && !CHECKS.has(e.check))
    )
      return undefined;
  }
  return d.entries as EntryRecord[];
}

export interface ServeOptions {
  store: OutputCacheStore;
  key: string;
  input: string;
  output: string;
  container: ContainerName;
  profile: string;
  inputSize: number;
  started: number;
  startedAt: string;
  planMs: number;
  writeManifest: boolean;
  /** The run's passthrough check setting (part of the key: the stored output was made with it). */
  verifyPassthrough: boolean;
  onProgress?: (p: LocaleProgress) => void;
  signal?: AbortSignal;
  /** Write the output and manifest only inside these roots (src/io/confine.ts). */
  confine?: Confinement;
}

/**
 * Serve a stored output: stream it into a temp file beside the output while it is verified, rename it
 * into place only after the verification passed, then write the manifest. Undefined on a miss (absent,
 * bad, or stored data this version cannot read): nothing is left behind and the caller signs as usual.
 */
export async function serveOutput(
  o: ServeOptions,
): Promise<{ manifest: LocaleManifest; hit: OutputHit } | undefined> {
  const t0 = performance.now();
  const file = await AtomicFile.create(o.output, 0o644, o.confine ? { confine: o.confine } : {});
  let hit: OutputHit | undefined;
  let records: EntryRecord[] | undefined;
  try {
    // One early fdatasync once EARLY_SYNC_BYTES are written lets the disk take the first part while the
    // rest is still being verified; commit's fsync then has less left.
    let written = 0;
    let early: Promise<void> | undefined;
    hit = await o.store.getOutput(o.key, async (chunk, position) => {
      await file.write(chunk, position);
      written += chunk.length;
      if (!early && written >= EARLY_SYNC_BYTES) {
        early = file.handle.datasync();
        early.catch(() => undefined);
      }
    });
    await early?.catch(() => undefined);
    records = hit && decodeOutputMeta(hit.meta);
    if (!hit || !records) {
      await file.abort();
      return undefined;
    }
    if (o.signal?.aborted)
      throw o.signal.reason ?? new CodedError('ABORTED' satisfies PipelineErrorCode, 'aborted');
    await file.commit();
  } catch (err) {
    await file.abort();
    throw err;
  }
  // Nothing was signed, decoded or assembled in this run: every signed entry and every passthrough check
  // was served from the cache.
  const entries = records.map((r) =>
    r.action === 'signed' || r.action === 'shared'
      ? { ...r, action: 'cached' as const }
      : r.check === 'decoded'
        ? { ...r, check: 'cached' as const }
        : r,
  );
  const manifest = buildManifest({
    input: o.input,
    output: o.output,
    container: o.container,
    profile: o.profile,
    dryRun: false,
    digests: { sha256: hit.sha256, sha512: hit.sha512, size: hit.size },
    outputCache: 'hit',
    verifyPassthrough: o.verifyPassthrough,
    records: entries,
    inputBytes: o.inputSize,
    timings: {
      startedAt: o.startedAt,
      ms: performance.now() - o.started,
      planMs: o.planMs,
      signMs: 0,
      writeMs: performance.now() - t0,
    },
  });
  const t = manifest.totals;
  const inputBytes = entries.reduce((n, e) => n + e.inputSize, 0);
  o.onProgress?.({
    stage: 'done',
    workBytesDone: 0,
    entriesDone: entries.length,
    entriesTotal: entries.length,
    bytesDone: inputBytes,
    bytesTotal: inputBytes,
    hits: t.hits,
    misses: 0,
    passthrough: t.passthrough + t.skippedInvalid,
  });
  if (o.writeManifest) await writeManifest(manifest, o.confine);
  return { manifest, hit };
}
