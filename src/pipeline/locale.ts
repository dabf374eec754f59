/**
 * One locale: plan every entry, sign the misses across the pool, repack in the original order with the
 * original flags and product info, MAR-sign, commit (temp file + rename), write the manifest.
 *
 * Memory stays bounded: entries are read one at a time as the window advances; at most `window`
 * entries (and `windowBytes` compressed bytes) are in flight; decompressed data only exists inside a
 * worker thread. Finished entries are written in index order from a small reorder buffer while later
 * entries are still being signed.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { cacheKey } from '../../cache/key.js';
import type { CacheStore } from '../../cache/types.js';
import { detectCodec, readSettings, settingsKey } from '../codecs/index.js';
import type { LoadedConfig, SigningProfile } from '../config/types.js';
import { CodedError, toPlainError, UsageError } from '../errors.js';
import {
  encodeHeaderFields,
  encodeIndex,
  marHeaderLayout,
  readEntryBytes,
  readMar,
  signableRanges,
} from '../formats/mar/index.js';
import type { MarEntry, MarInfo } from '../formats/mar/types.js';
import { writeFileAtomic } from '../io/atomic.js';
import { BufferSource, FileSource } from '../io/byte-source.js';
import { MarWriter, type MarWriterOptions } from '../mar/writer.js';
import { marSignatureSlots, signWriter } from '../signing/mar-signer.js';
import { VERSION } from '../version.js';
import { readInput, type InputSnapshot } from './input.js';
import { hashFile, sha256Hex } from './manifest.js';
import {
  encodeOutputMeta,
  hashFileSha256,
  localeOutputKey,
  outputStoreOf,
  serveOutput,
} from './output-cache.js';
import type { CompiledPolicy } from './policy.js';
import type { SigningPool } from './pool.js';
import {
  IN_MEMORY_INPUT_MAX,
  planMisses,
  startPrefetch,
  type EntryKey,
  type InputDigest,
  type Plan,
} from './prefetch.js';
import { SideHasher } from './side-hash.js';
import { InProcessCoordinator } from './single-flight.js';
import type { Coordinator, EntryAction, EntryRecord, LocaleManifest, LocaleProgress } from './types.js';
import { DEFAULT_MAX_OUTPUT_SIZE } from '../codecs/types.js';

/** A finished MAR up to this size is read back once into memory to sign and hash it; larger ones stream. */
export const IN_MEMORY_FINISH_MAX = 512 * 1024 * 1024;
/** Entries in flight per locale beyond the pool's threads (reading ahead while workers sign). */
const WINDOW_EXTRA = 4;
/** Compressed bytes held in the reorder window before the reader waits for the writer. */
export const WINDOW_MAX_BYTES = 256 * 1024 * 1024;

export interface LocaleContext {
  config: LoadedConfig;
  profile: SigningProfile;
  policy: CompiledPolicy;
  pool: SigningPool;
  cache: CacheStore | null;
  coordinator: Coordinator;
  counters: PipelineCounters;
  /**
   * Keys signed ahead by a plan (prefetch.ts) that no locale has recorded as its miss yet: null when
   * the result is in the cache, else the result itself (its cache put failed; held until used).
   */
  prefetched?: Map<string, Produced | null>;
  /** Default of `SignLocaleOptions.outputCache` (the config's `cache.outputs`; default true). */
  outputCache?: boolean;
  /**
   * The hashing thread shared by the pipeline's locales (started with the pipeline, so its start-up is
   * off the locale's path). Without one, a locale starts its own when it needs it.
   */
  side?: SideHasher;
}

export interface PipelineCounters {
  signOperations: number;
  hits: number;
  misses: number;
  bytesServed: number;
  /** Locales served whole by the locale-output tier / looked up there and not found. */
  outputHits?: number;
  outputMisses?: number;
}

export interface SignLocaleOptions {
  profile: string;
  input: string;
  output: string;
  dryRun?: boolean;
  skipInvalid?: boolean;
  onProgress?: (p: LocaleProgress) => void;
  signal?: AbortSignal;
  coordinator?: Coordinator;
  /** Default true: write `<output>.manifest.json`. */
  writeManifest?: boolean;
  /**
   * Use the locale-output tier (serve a stored output of the same input and settings; store this one
   * after signing). Default: the pipeline's (config `cache.outputs`, default true). Never in a dry run.
   */
  outputCache?: boolean;
  /**
   * Keys and misses planned ahead (a release plans all its locales at once and schedules their misses).
   * Without one, a non-dry run plans this locale itself and feeds its misses to the pool largest first.
   */
  plan?: Plan;
}

interface EntryOutcome {
  record: EntryRecord;
  data: Uint8Array;
  /** Recorded in index order, so the manifest does not depend on which entry finished first. */
  warning?: string;
  /**
   * A cache hit handed over before its sha256 was checked (warm assembly): resolves true when the check
   * passed, false when it failed (the entry is then produced again the ordinary way). The entry is
   * written to the output only after it resolved.
   */
  verified?: Promise<boolean>;
}

/** What a single-flight slot resolves to: the signed bytes and, when known, their sha256. */
export interface Produced {
  bytes: Uint8Array;
  /** Hex sha256 of `bytes`, from the worker or the cache's verification (saves hashing them again). */
  sha256?: string;
  /** A non-fatal problem (cache put failed), recorded by the locale that records the miss. */
  warning?: string;
}

/** A cache store that also returns the payload sha256 it just verified (FsCacheStore). */
interface DigestingCache {
  getWithSha256(key: string): Promise<{ payload: Uint8Array; sha256: string } | undefined>;
}

/** A cache store that reads a verified payload into the caller's buffer (FsCacheStore). */
interface ReadIntoCache {
  readInto(
    key: string,
    target: Uint8Array,
    digest?: (bytes: Uint8Array) => Promise<string>,
    onRead?: () => void,
  ): Promise<{ sha256: string } | undefined>;
}

function readIntoOf(cache: CacheStore | null): ReadIntoCache | undefined {
  return typeof (cache as Partial<ReadIntoCache> | null)?.readInto === 'function'
    ? (cache as unknown as ReadIntoCache)
    : undefined;
}

export async function cacheGet(cache: CacheStore, key: string): Promise<Produced | undefined> {
  const d = cache as Partial<DigestingCache>;
  if (typeof d.getWithSha256 === 'function') {
    const got = await d.getWithSha256.call(cache, key);
    return got && { bytes: got.payload, sha256: got.sha256 };
  }
  const bytes = await cache.get(key);
  return bytes && { bytes };
}

/**
 * Sign one entry in the pool and store it in the cache. `onPoolDone` runs as soon as the pool task
 * settles (before the cache write), so a scheduler can release the next task.
 */
export async function produceEntry(
  ctx: LocaleContext,
  key: string,
  name: string,
  raw: Uint8Array,
  signal?: AbortSignal,
  onPoolDone?: () => void,
): Promise<Produced> {
  let result;
  try {
    result = await ctx.pool.run(
      {
        configPath: ctx.config.path,
        configSha256: ctx.config.sha256,
        profile: ctx.profile.name,
        name,
        input: raw,
        maxOutputSize: DEFAULT_MAX_OUTPUT_SIZE,
      },
      signal,
    );
  } finally {
    onPoolDone?.();
  }
  ctx.counters.signOperations++;
  let warning: string | undefined;
  // A cache that cannot be written (full disk, read-only) must not fail a correctly signed entry:
  // the locale completes uncached and the manifest says why.
  if (ctx.cache)
    await ctx.cache.put(key, result.output).catch((err: unknown) => {
      const p = toPlainError(err);
      warning = `cache put failed for ${name}: ${p.code}: ${p.message}`;
    });
  return {
    bytes: result.output,
    ...(result.outputSha256 ? { sha256: result.outputSha256 } : {}),
    ...(warning ? { warning } : {}),
  };
}

export async function signLocaleWith(ctx: LocaleContext, opts: SignLocaleOptions): Promise<LocaleManifest> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  if (!opts.dryRun && resolve(opts.output) === resolve(opts.input))
    throw new UsageError('OUTPUT_IS_INPUT', `output ${opts.output} is the input file; write elsewhere`);
  const skipInvalid = opts.skipInvalid === true || ctx.policy.onInvalid === 'skip';
  const coordinator = opts.coordinator ?? ctx.coordinator;
  const outputStore =
    !opts.dryRun && (opts.outputCache ?? ctx.outputCache ?? true) ? outputStoreOf(ctx.cache) : undefined;
  const source = await FileSource.open(opts.input);
  let writer: MarWriter | undefined;
  let ownSide: SideHasher | undefined;
  const sideHasher = (): SideHasher => ctx.side ?? (ownSide ??= new SideHasher());
  const pending: Promise<EntryOutcome>[] = [];
  try {
    let outputKey: string | undefined;
    // A locale signed alone reads its input whole, once, into shared memory, hashing it as it comes in:
    // the whole file for the output key (tier on) on this thread, its signable entries for their cache
    // keys on the side thread. Planning and assembly then work from this one snapshot.
    let snapshot: InputSnapshot | undefined;
    if (!opts.dryRun && !opts.plan && source.size <= IN_MEMORY_INPUT_MAX) {
      // With the output tier the entries are hashed only after a miss: hashing them on the side thread
      // while the whole file is hashed here slowed the reads (and so a hit) on 2 cores.
      const ranges = outputStore
        ? []
        : (await readMar(source)).entries
            .filter((e) => ctx.policy.decide(e.name) === 'sign')
            .map((e) => ({ offset: e.offset, size: e.size }));
      snapshot = await readInput(opts.input, SideHasher.alloc(source.size), {
        whole: outputStore !== undefined,
        ranges,
        side: sideHasher(),
      });
    }
    let inputBytes = snapshot?.bytes;
    if (outputStore) {
      const planned = opts.plan?.inputs?.get(opts.input);
      const inputSha256 =
        planned && (await unchangedSince(opts.input, planned))
          ? planned.sha256
          : (snapshot?.sha256 ?? (await hashFileSha256(opts.input)));
      outputKey = localeOutputKey(ctx.profile, ctx.policy, skipInvalid, inputSha256);
      const served = await serveOutput({
        store: outputStore,
        key: outputKey,
        input: opts.input,
        output: opts.output,
        profile: ctx.profile.name,
        inputSize: source.size,
        started,
        startedAt,
        planMs: performance.now() - started,
        writeManifest: opts.writeManifest !== false,
        manifestPath: manifestPath(opts.output),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      if (served) {
        ctx.counters.outputHits = (ctx.counters.outputHits ?? 0) + 1;
        ctx.counters.hits += served.manifest.totals.hits;
        ctx.counters.bytesServed += served.hit.size;
        return served.manifest;
      }
      ctx.counters.outputMisses = (ctx.counters.outputMisses ?? 0) + 1;
    }
    // A release plan that left this input out (its output was in the cache, but no longer is) is
    // completed here, like a locale signed alone.
    const planHere = !opts.dryRun && !opts.plan?.keys.has(opts.input);
    if (planHere) {
      const keep = new Map<string, Buffer>();
      const plan = await planMisses(ctx, [opts.input], undefined, {
        inMemory: {
          side: sideHasher(),
          keep,
          ...(snapshot
            ? {
                preloaded: new Map([
                  [opts.input, { bytes: snapshot.bytes, entryDigests: snapshot.entryDigests }],
                ]),
              }
            : {}),
        },
      });
      inputBytes = keep.get(opts.input);
      // Only an in-process coordinator can hold gated slots cheaply (a distributed lock would be held
      // while waiting for its turn).
      if (plan.misses.length > 0 && coordinator instanceof InProcessCoordinator)
        startPrefetch({ ...ctx, coordinator }, plan.misses, opts.signal ? { signal: opts.signal } : {});
      opts = { ...opts, plan };
    }
    const info: MarInfo = await readMar(inputBytes ? new BufferSource(inputBytes) : source);
    const planMs = performance.now() - started;
    const entries = info.entries;
    const progress: LocaleProgress = {
      entriesDone: 0,
      entriesTotal: entries.length,
      bytesDone: 0,
      bytesTotal: entries.reduce((n, e) => n + e.size, 0),
      hits: 0,
      misses: 0,
      passthrough: 0,
    };
    const records: EntryRecord[] = [];
    let signOperations = 0;
    const warnings: string[] = [];

    const planKeys = opts.plan?.keys.get(opts.input);
    let streaming: PredictedLayout | undefined;
    // A warm locale's output, assembled in place in shared memory: cache hits are read straight into
    // their slots and passthrough entries copied in, so the finished MAR is never read back.
    let assembled: Buffer | undefined;
    const slotOf = (index: number): Buffer | undefined => {
      if (!assembled || !streaming) return undefined;
      const off = streaming.offsets[index]!;
      return assembled.subarray(off, off + streaming.sizes[index]!);
    };
    const readInto = readIntoOf(ctx.cache);
    /** An entry's raw bytes in a buffer of their own (transferable to a pool thread). */
    const entryBytes = async (entry: MarEntry): Promise<Uint8Array> => {
      if (!inputBytes) return readEntryBytes(source, entry);
      const own = Buffer.allocUnsafeSlow(entry.size);
      own.set(inputBytes.subarray(entry.offset, entry.offset + entry.size));
      return own;
    };
    const processEntry = async (entry: MarEntry, index: number, speculate = true): Promise<EntryOutcome> => {
      const t0 = performance.now();
      if (ctx.policy.decide(entry.name) === 'passthrough') {
        const slot = opts.dryRun ? undefined : slotOf(index);
        let raw: Uint8Array = inputBytes
          ? inputBytes.subarray(entry.offset, entry.offset + entry.size)
          : await readEntryBytes(source, entry);
        if (slot && slot.length === raw.length) {
          slot.set(raw);
          raw = slot;
        }
        const inputSha256 = sha256Hex(raw);
        return {
          record: {
            name: entry.name,
            flags: entry.flags,
            inputSize: raw.length,
            inputSha256,
            action: 'passthrough',
            codec: codecName(raw),
            outputSize: raw.length,
            outputSha256: inputSha256,
            ms: performance.now() - t0,
          },
          data: raw,
        };
      }
      // A planned entry was already read and hashed; a hit then never reads the input again.
      let raw: Uint8Array | undefined;
      let known = planKeys?.get(index);
      if (!known) {
        raw = await entryBytes(entry);
        const inputSha256 = sha256Hex(raw);
        let codec: string;
        try {
          codec = settingsKey(await readSettings(raw));
        } catch (err) {
          const base = { name: entry.name, flags: entry.flags, inputSize: raw.length, inputSha256 };
          return invalidOrThrow(err, base, raw, inputSha256, t0);
        }
        const signerFingerprint = ctx.profile.fingerprint;
        known = {
          key: cacheKey({ signerFingerprint, codecSettings: codec, inputSha256 }),
          codec,
          inputSha256,
        };
      }
      const { key, codec, inputSha256 } = known;
      const base = { name: entry.name, flags: entry.flags, inputSize: entry.size, inputSha256 };
      if (opts.dryRun) {
        const cached = ctx.cache ? await ctx.cache.get(key) : undefined;
        const action: EntryAction = cached ? 'hit' : 'miss';
        return {
          record: {
            ...base,
            action,
            codec,
            outputSize: cached?.length ?? 0,
            outputSha256: cached ? sha256Hex(cached) : '',
            ms: performance.now() - t0,
          },
          data: raw ?? new Uint8Array(0),
        };
      }
      let how = 'shared' as 'hit' | 'miss' | 'shared';
      let produced: Produced | undefined;
      // Warm: the entry straight from the cache into its slot, verified on the side thread. Anything
      // unexpected (absent, corrupt, another size) takes the general path below.
      const slot = slotOf(index);
      if (slot && readInto && !ctx.prefetched?.get(key)) {
        const side = sideHasher();
        // Without plan bookkeeping to do for the key, the entry goes on (written, hashed for the MAR
        // signature) as soon as its bytes are in place, while the side thread checks them.
        const early = speculate && !ctx.prefetched?.has(key);
        let landed: () => void = () => undefined;
        const inSlot = new Promise<'landed'>((r) => (landed = () => r('landed')));
        const reading = readInto.readInto(
          key,
          slot,
          (b) => side.digest(b, 'sha256'),
          early ? landed : undefined,
        );
        reading.catch(() => undefined);
        const first = await Promise.race([inSlot, reading]);
        if (first === 'landed') {
          const record: EntryRecord = {
            ...base,
            action: 'hit',
            codec,
            outputSize: slot.length,
            outputSha256: '',
            ms: performance.now() - t0,
          };
          const verified = reading.then((got) => {
            if (!got) return false;
            record.outputSha256 = got.sha256;
            ctx.counters.hits++;
            ctx.counters.bytesServed += slot.length;
            return true;
          });
          verified.catch(() => undefined); // awaited by finishOne
          return { record, data: slot, verified };
        }
        if (first) {
          how = 'hit';
          produced = { bytes: slot, sha256: first.sha256 };
        }
      }
      try {
        const held = produced ? undefined : ctx.prefetched?.get(key);
        if (held) {
          ctx.prefetched!.delete(key);
          how = 'miss';
          produced = held;
        } else if (!produced)
          produced = await coordinator.once<Produced>(
            key,
            async () => {
              const got = ctx.cache ? await cacheGet(ctx.cache, key) : undefined;
              if (got) how = 'hit';
              return got;
            },
            async () => {
              how = 'miss';
              raw ??= await entryBytes(entry);
              return produceEntry(ctx, key, entry.name, raw, opts.signal);
            },
          );
      } catch (err) {
        // `raw` was transferred to the worker (or never read); re-read it to pass the entry through.
        if (skipInvalid && isInvalidInput(err)) {
          const again = await entryBytes(entry);
          return invalidOrThrow(err, base, again, inputSha256, t0);
        }
        throw err;
      }
      // The first locale to use an entry signed ahead of it by a plan records the miss (and the
      // signature), whether it joined the work in flight or found it in the cache afterwards.
      if (how !== 'miss' && ctx.prefetched?.delete(key)) how = 'miss';
      // A key another locale of this process was already producing counts as a hit: no work was done here.
      const action: EntryAction = how === 'miss' ? 'miss' : 'hit';
      if (action === 'hit') {
        ctx.counters.hits++;
        ctx.counters.bytesServed += produced.bytes.length;
      } else {
        ctx.counters.misses++;
        signOperations++;
      }
      return {
        ...(action === 'miss' && produced.warning ? { warning: produced.warning } : {}),
        record: {
          ...base,
          action,
          codec,
          outputSize: produced.bytes.length,
          outputSha256: produced.sha256 ?? sha256Hex(produced.bytes),
          ms: performance.now() - t0,
        },
        data: produced.bytes,
      };
    };

    const invalidOrThrow = (
      err: unknown,
      base: Pick<EntryRecord, 'name' | 'flags' | 'inputSize' | 'inputSha256'>,
      raw: Uint8Array,
      inputSha256: string,
      t0: number,
    ): EntryOutcome => {
      if (!skipInvalid || !isInvalidInput(err)) throw err;
      return {
        record: {
          ...base,
          action: 'skipped-invalid',
          codec: codecName(raw),
          outputSize: raw.length,
          outputSha256: inputSha256,
          error: toPlainError(err),
          ms: performance.now() - t0,
        },
        data: raw,
      };
    };

    if (!opts.dryRun) {
      const writerOptions: MarWriterOptions = {
        additionalHeader: info.hasAdditionalHeader,
        ...(info.productInfo
          ? { productInfo: { channel: info.productInfo.channel, version: info.productInfo.version } }
          : {}),
        ...(ctx.profile.mar
          ? { signatureSlots: marSignatureSlots(ctx.profile.mar.keys, ctx.profile.mar.algorithm) }
          : {}),
      };
      writer = await MarWriter.create(opts.output, writerOptions);
      streaming = await predictLayout(ctx, entries, planKeys, writerOptions, ctx.profile.mar?.algorithm);
      if (streaming && streaming.fileSize <= IN_MEMORY_FINISH_MAX) {
        assembled = SideHasher.alloc(streaming.fileSize);
        // A fully predicted layout means a short (warm) locale: have the hashing thread started.
        sideHasher();
      }
    }

    const signStarted = performance.now();
    const windowSize = ctx.pool.threads + WINDOW_EXTRA;
    let windowBytes = 0;
    let next = 0;
    const finishOne = async (): Promise<void> => {
      const head = pending.shift()!;
      let out = await head;
      const i = records.length;
      const entry = entries[i]!;
      windowBytes -= entry.size;
      if (streaming?.ok) {
        if (out.data.length !== streaming.sizes[i]) streaming.ok = false;
        // Hashed for the MAR signature even before a speculative hit's check is back (it runs at the
        // same time on the side thread); a failed check throws this stream away.
        else streaming.hash?.update(out.data);
      }
      if (out.verified && !(await out.verified)) {
        // The cache entry was bad (the store counted and removed it): produce it again the ordinary
        // way (it is signed anew); the signable stream is then read back from the file.
        if (streaming) streaming.ok = false;
        out = await processEntry(entry, i, false);
      }
      if (streaming?.ok && assembled) {
        // An entry that did not land in its slot (signed here, or shared by another locale) is copied in.
        const off = streaming.offsets[i]!;
        if (out.data.buffer !== assembled.buffer || out.data.byteOffset !== off) assembled.set(out.data, off);
      }
      records.push(out.record);
      if (out.warning) warnings.push(out.warning);
      if (writer) await writer.addEntry(out.record.name, out.record.flags, out.data);
      progress.entriesDone++;
      progress.bytesDone += entry.size;
      if (out.record.action === 'hit') progress.hits++;
      else if (out.record.action === 'miss') progress.misses++;
      else progress.passthrough++;
      opts.onProgress?.({ ...progress });
    };
    while (next < entries.length || pending.length > 0) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new CodedError('ABORTED', 'aborted');
      const entry = entries[next];
      const canStart =
        entry !== undefined &&
        pending.length < windowSize &&
        (pending.length === 0 || windowBytes + entry.size <= WINDOW_MAX_BYTES);
      if (canStart) {
        next++;
        windowBytes += entry.size;
        const p = processEntry(entry, next - 1);
        p.catch(() => undefined); // observed by finishOne; avoid unhandled rejections while queued
        pending.push(p);
      } else await finishOne();
    }
    const signMs = performance.now() - signStarted;

    const writeStarted = performance.now();
    let digests: { sha256: string; sha512: string; size: number } | undefined;
    let stored: Promise<string | undefined> | undefined;
    if (writer) {
      const written = await writer.finish();
      let signableDigest: Uint8Array | undefined;
      const asPredicted =
        streaming?.ok === true &&
        written.indexOffset === streaming.indexOffset &&
        written.fileSize === streaming.fileSize;
      if (asPredicted && streaming!.hash) {
        streaming!.hash.update(streaming!.index);
        signableDigest = new Uint8Array(streaming!.hash.digest());
      }
      if (written.fileSize <= IN_MEMORY_FINISH_MAX) {
        let inMemory: Buffer | undefined;
        if (asPredicted && assembled) {
          // The header (with its final offsets) and index the writer wrote, encoded the same way.
          assembled.set(streaming!.head, 0);
          assembled.set(streaming!.index, streaming!.indexOffset);
          inMemory = assembled;
        }
        const fin = await finishInMemory(
          writer,
          written,
          ctx.profile.mar,
          sideHasher(),
          signableDigest,
          inMemory,
        );
        writer = undefined;
        // Store the output for the next run of the same input (its header's sha512 is written last, once
        // the side thread has it); a failure is a warning, never a failed locale. finishInMemory has
        // committed (renamed) the output, so the store may hard-link the final file instead of writing
        // the bytes a second time.
        if (outputStore && outputKey)
          stored = outputStore
            .putOutput(
              outputKey,
              fin.bytes,
              { sha256: fin.sha256, sha512: fin.sha512, meta: encodeOutputMeta(records) },
              { linkFrom: opts.output },
            )
            .then(
              () => undefined,
              (err: unknown) => {
                const p = toPlainError(err);
                return `output cache put failed: ${p.code}: ${p.message}`;
              },
            );
        digests = { sha256: fin.sha256, sha512: await fin.sha512, size: fin.size };
      } else {
        if (ctx.profile.mar) await signWriter(writer, ctx.profile.mar.keys, ctx.profile.mar.algorithm);
        await writer.commit();
        writer = undefined;
        digests = await hashFile(opts.output);
      }
    }
    const writeMs = performance.now() - writeStarted;

    const totals: LocaleManifest['totals'] = {
      entries: records.length,
      passthrough: records.filter((r) => r.action === 'passthrough').length,
      hits: records.filter((r) => r.action === 'hit').length,
      misses: records.filter((r) => r.action === 'miss').length,
      skippedInvalid: records.filter((r) => r.action === 'skipped-invalid').length,
      signOperations,
      inputBytes: source.size,
      outputBytes: digests?.size ?? 0,
    };
    const manifest: LocaleManifest = {
      marsignVersion: VERSION,
      input: opts.input,
      output: opts.output,
      profile: ctx.profile.name,
      dryRun: opts.dryRun === true,
      ...(digests
        ? { output_sha256: digests.sha256, output_sha512: digests.sha512, outputSize: digests.size }
        : {}),
      ...(outputStore ? { outputCache: 'miss' as const } : {}),
      entries: records,
      ...(warnings.length ? { warnings } : {}),
      totals,
      timings: { startedAt, ms: performance.now() - started, planMs, signMs, writeMs },
    };
    const writeManifest = (): Promise<void> =>
      writeFileAtomic(manifestPath(opts.output), JSON.stringify(manifest, null, 2) + '\n');
    const toDisk = !opts.dryRun && opts.writeManifest !== false;
    // The manifest is written while the output is being stored; a failed store (rare) rewrites it
    // with the warning.
    const [, putWarning] = await Promise.all([toDisk ? writeManifest() : undefined, stored]);
    if (putWarning) {
      manifest.warnings = [...(manifest.warnings ?? []), putWarning];
      if (toDisk) await writeManifest();
    }
    return manifest;
  } catch (err) {
    await writer?.abort().catch(() => undefined);
    // Let in-flight entries settle before closing the source they read from.
    await Promise.allSettled(pending);
    throw err;
  } finally {
    await ownSide?.close();
    await source.close();
  }
}

/**
 * How many in-memory finishes used a signable digest hashed while writing vs. one read back, and how
 * many had the whole output assembled in memory (no read-back of the file at all) (tests).
 */
export const finishStats = { streamed: 0, readBack: 0, assembled: 0 };

interface PredictedLayout {
  /** The MAR signature's hash, fed the header, then each entry as written, then the index (if MAR-signed). */
  hash: Hash | undefined;
  /** Predicted stored size of every entry, in index order. */
  sizes: number[];
  /** Predicted offset of every entry in the output. */
  offsets: number[];
  /** Header bytes up to the first entry with the final index offset and file size (signatures zero). */
  head: Buffer;
  index: Uint8Array;
  indexOffset: number;
  fileSize: number;
  /** False once an entry's size differed from the prediction (then the stream is read back). */
  ok: boolean;
}

/**
 * When every entry's stored size is known before writing (passthrough: its input size; signable: a
 * planned cache hit, whose size the cache file gives), the whole layout is known, so the MAR signature's
 * hash can take the header (with its final index offset and file size), then each entry as it is
 * written, then the index: no read-back pass for it. Any surprise (a hit turned miss, a size that
 * differs) falls back to hashing the stream read back from the file.
 */
async function predictLayout(
  ctx: LocaleContext,
  entries: MarEntry[],
  planKeys: Map<number, EntryKey> | undefined,
  writerOptions: MarWriterOptions,
  algorithm: string | undefined,
): Promise<PredictedLayout | undefined> {
  const cache = ctx.cache as
    (CacheStore & { payloadSize?: (k: string) => Promise<number | undefined> }) | null;
  if (!cache || typeof cache.payloadSize !== 'function') return undefined;
  const sizes: number[] = [];
  for (const [i, e] of entries.entries()) {
    if (ctx.policy.decide(e.name) === 'passthrough') {
      sizes.push(e.size);
      continue;
    }
    const known = planKeys?.get(i);
    const size = known ? await cache.payloadSize(known.key) : undefined;
    if (size === undefined) return undefined;
    sizes.push(size);
  }
  const layout = marHeaderLayout(writerOptions);
  let offset = layout.dataStart;
  const predicted: MarEntry[] = entries.map((e, i) => {
    const r = { name: e.name, offset, size: sizes[i]!, flags: e.flags };
    offset += sizes[i]!;
    return r;
  });
  const index = encodeIndex(predicted);
  const indexOffset = offset;
  const fileSize = offset + index.length;
  const head = Buffer.from(layout.header);
  head.set(encodeHeaderFields(indexOffset, fileSize), 0);
  let hash: Hash | undefined;
  if (algorithm) {
    hash = createHash(algorithm);
    const headInfo = {
      style: 'modern',
      signatures: layout.signatures,
      fileSize: layout.dataStart,
    } as MarInfo;
    for (const r of signableRanges(headInfo)) hash.update(head.subarray(r.offset, r.offset + r.length));
  }
  return {
    hash,
    sizes,
    offsets: predicted.map((e) => e.offset),
    head,
    index,
    indexOffset,
    fileSize,
    ok: true,
  };
}

/**
 * Sign and commit a finished MAR whose temp file fits in memory, reading it back once: the MAR
 * signature covers the bytes as read back from the file (the exact stream, mar-format.md §8); the
 * output sha256 and sha512 are then computed over the same buffer with the signatures patched in
 * (no second read). The file's data is fsynced while the signable stream is hashed. WebCrypto's
 * threaded digests were measured slower here (they copy the input) than node:crypto's in-line ones.
 */
async function finishInMemory(
  writer: MarWriter,
  info: MarInfo,
  mar: SigningProfile['mar'],
  side: SideHasher,
  signableDigest?: Uint8Array,
  /** The file's bytes already assembled in shared memory (signature slots zero): nothing is read back. */
  assembled?: Buffer,
): Promise<{ sha256: string; sha512: Promise<string>; size: number; bytes: Buffer }> {
  const fh = await open(writer.tempPath, 'r');
  // fsync through a second descriptor flushes the same file; commit's fsync then has little left.
  const early = fh.sync();
  early.catch(() => undefined);
  let buf: Buffer;
  try {
    if (assembled && assembled.length === info.fileSize) {
      finishStats.assembled++;
      buf = assembled;
    } else {
      buf = SideHasher.alloc(info.fileSize);
      let done = 0;
      while (done < buf.length) {
        const { bytesRead } = await fh.read(buf, done, buf.length - done, done);
        if (bytesRead === 0)
          throw new CodedError(
            'MAR_SHORT_READ',
            `${writer.tempPath} ended at ${done} of ${buf.length} bytes`,
          );
        done += bytesRead;
      }
    }
    if (mar) {
      let digest = signableDigest;
      if (digest) finishStats.streamed++;
      else {
        finishStats.readBack++;
        const h = createHash(mar.algorithm);
        for (const r of signableRanges(info)) h.update(buf.subarray(r.offset, r.offset + r.length));
        digest = new Uint8Array(h.digest());
      }
      const sigs = await Promise.all(mar.keys.map((k) => k.signDigest(mar.algorithm, digest)));
      await writer.setSignatures(sigs);
      for (const [i, slot] of info.signatures.entries()) buf.set(sigs[i]!, slot.offset);
    }
  } catch (err) {
    await early.catch(() => undefined);
    await fh.close();
    throw err;
  }
  // The final bytes' two digests now: sha512 (the slower pass) on the side thread, sha256 here, while
  // the data's fsync started above runs in the kernel; commit's own fsync then has little left.
  const sha512 = side.digest(buf, 'sha512');
  sha512.catch(() => undefined); // awaited by the caller
  const sha256 = createHash('sha256').update(buf).digest('hex');
  await early.catch(() => undefined);
  await fh.close();
  await writer.commit();
  return { sha256, sha512, size: buf.length, bytes: buf };
}

/** Whether the file at `path` is still the one a plan hashed (same size, mtime and inode). */
async function unchangedSince(path: string, d: InputDigest): Promise<boolean> {
  try {
    const st = await stat(path, { bigint: true });
    return st.size === BigInt(d.size) && st.mtimeNs === d.mtimeNs && st.ino === d.ino && st.dev === d.dev;
  } catch {
    return false;
  }
}

export function manifestPath(output: string): string {
  return `${output}.manifest.json`;
}

function codecName(raw: Uint8Array): string {
  try {
    return String(detectCodec(raw));
  } catch {
    return 'unknown';
  }
}

/** A matched entry that is not a PE (policy), or not a valid compressed stream/PE (format). */
function isInvalidInput(err: unknown): boolean {
  const p = toPlainError(err);
  return p.name === 'PolicyError' || p.name === 'FormatError';
}
