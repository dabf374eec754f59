/**
 * One locale: plan every entry, sign the misses across the pool, repack in the original order with the
 * original flags and product info, MAR-sign, commit (temp file + rename), write the manifest.
 *
 * Memory stays bounded: entries are read one at a time as the window advances; at most `window`
 * entries (and `windowBytes` compressed bytes) are in flight; decompressed data only exists inside a
 * worker thread. Finished entries are written in index order from a small reorder buffer while later
 * entries are still being signed.
 */
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { cacheKey } from '../../cache/key.js';
import type { CacheStore } from '../../cache/types.js';
import { detectCodec, readSettings, settingsKey } from '../codecs/index.js';
import type { LoadedConfig, SigningProfile } from '../config/types.js';
import { CodedError, toPlainError, UsageError } from '../errors.js';
import { readEntryBytes, readMar } from '../formats/mar/index.js';
import type { MarEntry, MarInfo } from '../formats/mar/types.js';
import { writeFileAtomic } from '../io/atomic.js';
import { FileSource } from '../io/byte-source.js';
import { MarWriter } from '../mar/writer.js';
import { marSignatureSlots, signWriter } from '../signing/mar-signer.js';
import { VERSION } from '../version.js';
import { hashFile, sha256Hex } from './manifest.js';
import type { CompiledPolicy } from './policy.js';
import type { SigningPool } from './pool.js';
import type { Coordinator, EntryAction, EntryRecord, LocaleManifest, LocaleProgress } from './types.js';
import { DEFAULT_MAX_OUTPUT_SIZE } from '../codecs/types.js';

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
}

export interface PipelineCounters {
  signOperations: number;
  hits: number;
  misses: number;
  bytesServed: number;
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
}

interface EntryOutcome {
  record: EntryRecord;
  data: Uint8Array;
}

/** What a single-flight slot resolves to: the signed bytes, and whether they came from the cache. */
interface Produced {
  bytes: Uint8Array;
}

export async function signLocaleWith(ctx: LocaleContext, opts: SignLocaleOptions): Promise<LocaleManifest> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  if (!opts.dryRun && resolve(opts.output) === resolve(opts.input))
    throw new UsageError('OUTPUT_IS_INPUT', `output ${opts.output} is the input file; write elsewhere`);
  const skipInvalid = opts.skipInvalid === true || ctx.policy.onInvalid === 'skip';
  const coordinator = opts.coordinator ?? ctx.coordinator;
  const source = await FileSource.open(opts.input);
  let writer: MarWriter | undefined;
  const pending: Promise<EntryOutcome>[] = [];
  try {
    const info: MarInfo = await readMar(source);
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

    const processEntry = async (entry: MarEntry): Promise<EntryOutcome> => {
      const t0 = performance.now();
      const raw = await readEntryBytes(source, entry);
      const inputSha256 = sha256Hex(raw);
      const base = { name: entry.name, flags: entry.flags, inputSize: raw.length, inputSha256 };
      if (ctx.policy.decide(entry.name) === 'passthrough') {
        return {
          record: {
            ...base,
            action: 'passthrough',
            codec: codecName(raw),
            outputSize: raw.length,
            outputSha256: inputSha256,
            ms: performance.now() - t0,
          },
          data: raw,
        };
      }
      let codec: string;
      try {
        codec = settingsKey(await readSettings(raw));
      } catch (err) {
        return invalidOrThrow(err, base, raw, inputSha256, t0);
      }
      const signerFingerprint = ctx.profile.fingerprint;
      const key = cacheKey({ signerFingerprint, codecSettings: codec, inputSha256 });
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
          data: raw,
        };
      }
      let how = 'shared' as 'hit' | 'miss' | 'shared';
      let produced: Produced;
      try {
        produced = await coordinator.once<Produced>(
          key,
          async () => {
            const got = ctx.cache ? await ctx.cache.get(key) : undefined;
            if (got) how = 'hit';
            return got ? { bytes: got } : undefined;
          },
          async () => {
            how = 'miss';
            const result = await ctx.pool.run(
              {
                configPath: ctx.config.path,
                configSha256: ctx.config.sha256,
                profile: ctx.profile.name,
                name: entry.name,
                input: raw,
                maxOutputSize: DEFAULT_MAX_OUTPUT_SIZE,
              },
              opts.signal,
            );
            signOperations++;
            ctx.counters.signOperations++;
            // A cache that cannot be written (full disk, read-only) must not fail a correctly signed
            // entry: the locale completes uncached and the manifest says why.
            if (ctx.cache)
              await ctx.cache.put(key, result.output).catch((err: unknown) => {
                const p = toPlainError(err);
                warnings.push(`cache put failed for ${entry.name}: ${p.code}: ${p.message}`);
              });
            return { bytes: result.output };
          },
        );
      } catch (err) {
        // `raw` was transferred to the worker; re-read it to pass the entry through unchanged.
        if (skipInvalid && isInvalidInput(err)) {
          const again = await readEntryBytes(source, entry);
          return invalidOrThrow(err, base, again, inputSha256, t0);
        }
        throw err;
      }
      // A key another locale of this process was already producing counts as a hit: no work was done here.
      const action: EntryAction = how === 'miss' ? 'miss' : 'hit';
      if (action === 'hit') {
        ctx.counters.hits++;
        ctx.counters.bytesServed += produced.bytes.length;
      } else ctx.counters.misses++;
      return {
        record: {
          ...base,
          action,
          codec,
          outputSize: produced.bytes.length,
          outputSha256: sha256Hex(produced.bytes),
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
      writer = await MarWriter.create(opts.output, {
        additionalHeader: info.hasAdditionalHeader,
        ...(info.productInfo
          ? { productInfo: { channel: info.productInfo.channel, version: info.productInfo.version } }
          : {}),
        ...(ctx.profile.mar
          ? { signatureSlots: marSignatureSlots(ctx.profile.mar.keys, ctx.profile.mar.algorithm) }
          : {}),
      });
    }

    const signStarted = performance.now();
    const windowSize = ctx.pool.threads + WINDOW_EXTRA;
    let windowBytes = 0;
    let next = 0;
    const finishOne = async (): Promise<void> => {
      const head = pending.shift()!;
      const out = await head;
      const entry = entries[records.length]!;
      windowBytes -= entry.size;
      records.push(out.record);
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
        const p = processEntry(entry);
        p.catch(() => undefined); // observed by finishOne; avoid unhandled rejections while queued
        pending.push(p);
      } else await finishOne();
    }
    const signMs = performance.now() - signStarted;

    const writeStarted = performance.now();
    let digests: { sha256: string; sha512: string; size: number } | undefined;
    if (writer) {
      await writer.finish();
      if (ctx.profile.mar) await signWriter(writer, ctx.profile.mar.keys, ctx.profile.mar.algorithm);
      await writer.commit();
      writer = undefined;
      digests = await hashFile(opts.output);
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
      entries: records,
      ...(warnings.length ? { warnings } : {}),
      totals,
      timings: { startedAt, ms: performance.now() - started, planMs, signMs, writeMs },
    };
    if (!opts.dryRun && opts.writeManifest !== false)
      await writeFileAtomic(manifestPath(opts.output), JSON.stringify(manifest, null, 2) + '\n');
    return manifest;
  } catch (err) {
    await writer?.abort().catch(() => undefined);
    // Let in-flight entries settle before closing the source they read from.
    await Promise.allSettled(pending);
    throw err;
  } finally {
    await source.close();
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
