/**
 * The passthrough check (docs/OPERATIONS.md "Threat model"): an entry the policy does not sign is copied
 * as stored, but the container signature then vouches for it, so before the container is signed each
 * one is decoded whole with its codec, within the config's `limits`, and — where the container declares
 * them (zip) — its size and CRC-32 compared. The decode runs in the signing pool (CPU work), overlapped
 * with the rest of the locale; the locale awaits every check before `finish` signs.
 *
 * Each unique stored blob is checked once: a passed check leaves a marker in the cache under its check
 * key (keys.ts: the bytes' sha256, codec, bounds, declared facts), found by later locales and runs; in
 * one process concurrent checks of one key share one decode.
 */
import type { ArchiveEntry, OpenedArchive } from '../archive/types.js';
import type { CodecSettings, DecodedFacts } from '../codecs/types.js';
import { FormatError, fromPlainError, toPlainError } from '../errors.js';
import type { CodecErrorCode } from '../codecs/errors.js';
import type { SigningContext } from './context.js';
import { passthroughCheckKey } from './keys.js';
import { joinUnlessAborted } from './single-flight.js';
import type { PassthroughCheck } from './types.js';

/**
 * Check one passthrough entry (`raw`: its stored bytes, `sha256` their digest). Resolves with how it was
 * found intact; rejects with the codec's typed error (or `ENTRY_CORRUPT` for a CRC or size that does not
 * match the headers) naming the entry, `details.check: 'passthrough'`.
 */
export async function checkPassthrough(
  l: { ctx: SigningContext; archive: OpenedArchive; signal?: AbortSignal },
  entry: ArchiveEntry,
  raw: Uint8Array,
  sha256: string,
): Promise<PassthroughCheck> {
  const { ctx } = l;
  try {
    const codec = l.archive.codecOf(entry, raw);
    const expect = l.archive.declaredFacts?.(entry);
    const limits = ctx.profile.limits;
    // A stored MAR entry is its own decoded form: its size bound is the whole check (no thread, no marker).
    if (codec.codec === 'none' && !expect) {
      if (raw.length > limits.maxEntrySize)
        throw new FormatError(
          'none',
          'CODEC_OUTPUT_TOO_LARGE' satisfies CodecErrorCode,
          `stored entry of ${raw.length} bytes is over the ${limits.maxEntrySize}-byte limit`,
        );
      return 'decoded';
    }
    const key = passthroughCheckKey(codec, sha256, limits, expect);
    const markers = ctx.store?.checks ?? null;
    const outcome = await joinUnlessAborted(
      () =>
        ctx.checks.once(
          key,
          // A marker that cannot be read is a miss: the entry is decoded, never waved through or failed.
          async () => (markers ? markers.hasCheck(key).catch(() => false) : false),
          () => decode(ctx, entry, raw, codec, expect, key, l.signal),
        ),
      l.signal,
    );
    if (outcome === 'cached') ctx.counters.passthroughCached++;
    return outcome;
  } catch (err) {
    throw corrupt(err, entry.name);
  }
}

/** Decode in the pool, count it, and leave the marker (a cache that cannot take it only costs a re-check). */
async function decode(
  ctx: SigningContext,
  entry: ArchiveEntry,
  raw: Uint8Array,
  codec: CodecSettings,
  expect: DecodedFacts | undefined,
  key: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  await ctx.pool.check(
    {
      name: entry.name,
      input: raw,
      codec,
      maxOutputSize: ctx.profile.limits.maxEntrySize,
      maxRatio: ctx.profile.limits.maxCompressionRatio,
      ...(expect ? { expect } : {}),
    },
    signal,
  );
  ctx.counters.passthroughDecoded++;
  await ctx.store?.checks?.putCheck(key).catch(() => undefined);
}

/** The check's error with the entry named (message and details), its class and code kept. */
function corrupt(err: unknown, name: string): unknown {
  const p = toPlainError(err);
  if (p.code === 'ABORTED') return err;
  const message = p.message.includes(name) ? p.message : `${name}: ${p.message}`;
  const details = { ...p.details, entry: name, check: 'passthrough' };
  if (p.name !== 'FormatError') return fromPlainError({ ...p, message, details });
  return new FormatError(
    p.format ?? 'entry',
    p.code,
    `${message} (a passthrough entry, checked before the container is signed)`,
    undefined,
    { details },
  );
}
