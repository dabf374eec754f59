/**
 * Raw deflate (RFC 1951), the codec of zip method 8, through node:zlib (docs/ARCHITECTURE.md "Zip format").
 * - inflate: a streaming InflateRaw whose output is counted as it arrives; past the size cap or the
 *   ratio limit the stream is destroyed at once, so a bomb costs at most the cap, never its full size.
 * - deflate: one-shot zlib at DEFLATE_LEVEL (chosen by docs/BENCHMARKS.md "Deflate").
 * - CRC-32: zlib's (node:zlib crc32, Node ≥ 20.15).
 * Not wired into src/codecs/index.ts (MAR entries are never deflate); zip code imports this module.
 */
import { constants, crc32 as zlibCrc32, createInflateRaw, deflateRaw as zlibDeflateRaw } from 'node:zlib';
import type { FormatError } from '../errors.js';
import { codecError, type CodecErrorCode } from './errors.js';
import { DEFAULT_MAX_OUTPUT_SIZE, type CodecProgress } from './types.js';

/**
 * zlib level for re-deflated entries: 6 (zlib's default). On PE files level 9 costs 3-4× the CPU for
 * outputs 0.4% smaller (docs/BENCHMARKS.md "Deflate"); level 1 is 1.5-2.4× faster but 8.5% larger.
 */
export const DEFLATE_LEVEL = 6;
/** Output : input ratio above which an inflate stops (deflate's own maximum is ~1032:1). */
export const DEFLATE_MAX_RATIO = 200;
/** Outputs up to this size are never stopped for their ratio. */
export const DEFLATE_RATIO_MIN_SIZE = 1024 * 1024;
const CHUNK = 64 * 1024;

export interface InflateOptions {
  /** Output cap (default DEFAULT_MAX_OUTPUT_SIZE, 1 GiB): more is `CODEC_OUTPUT_TOO_LARGE`. */
  maxOutputSize?: number;
  /** Ratio limit (default DEFLATE_MAX_RATIO): more is `CODEC_RATIO_TOO_HIGH`. */
  maxRatio?: number;
  /** Default DEFLATE_RATIO_MIN_SIZE. */
  ratioMinSize?: number;
  /** Compressed bytes zlib has consumed, of `input.length`, as output chunks arrive. */
  onProgress?: CodecProgress;
}

const fail = (
  code: Exclude<CodecErrorCode, 'POLICY_NOT_PE'>,
  message: string,
  cause?: unknown,
  details?: Record<string, unknown>,
): FormatError =>
  codecError('deflate', code, message, undefined, {
    ...(cause === undefined ? {} : { cause }),
    ...(details ? { details } : {}),
  });

function nonNegative(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0)
    throw new RangeError(`${name} must be a non-negative integer, got ${v}`);
  return v;
}

/**
 * Inflate one raw deflate stream. It must end exactly at the end of `input` (`CODEC_TRAILING_DATA`
 * otherwise) and be complete and valid (`CODEC_CORRUPT`).
 */
export function inflateRaw(input: Uint8Array, options: InflateOptions = {}): Promise<Uint8Array> {
  const cap = nonNegative('maxOutputSize', options.maxOutputSize ?? DEFAULT_MAX_OUTPUT_SIZE);
  const maxRatio = options.maxRatio ?? DEFLATE_MAX_RATIO;
  if (!(maxRatio > 0)) throw new RangeError(`maxRatio must be positive, got ${maxRatio}`);
  const ratioMinSize = nonNegative('ratioMinSize', options.ratioMinSize ?? DEFLATE_RATIO_MIN_SIZE);
  return new Promise((resolve, reject) => {
    const z = createInflateRaw({ chunkSize: CHUNK });
    const chunks: Buffer[] = [];
    let total = 0;
    let settled = false;
    const stop = (e: FormatError): void => {
      if (settled) return;
      settled = true;
      z.destroy();
      reject(e);
    };
    z.on('data', (chunk: Buffer) => {
      total += chunk.length;
      // `produced`: the running count when the stream was stopped (at most one chunk past the limit).
      if (total > cap)
        return stop(
          fail('CODEC_OUTPUT_TOO_LARGE', `deflate stream decodes to more than ${cap} bytes`, undefined, {
            produced: total,
            limit: cap,
          }),
        );
      if (total > ratioMinSize && total > maxRatio * input.length)
        return stop(
          fail(
            'CODEC_RATIO_TOO_HIGH',
            `deflate stream of ${input.length} bytes decodes to more than ${total} (over ${maxRatio}:1)`,
            undefined,
            { produced: total, limit: maxRatio },
          ),
        );
      chunks.push(chunk);
      options.onProgress?.(z.bytesWritten, input.length);
    });
    z.on('error', (e: NodeJS.ErrnoException) =>
      stop(fail('CODEC_CORRUPT', `zlib: ${e.message}${e.code ? ` (${e.code})` : ''}`, e)),
    );
    z.on('end', () => {
      if (settled) return;
      if (z.bytesWritten !== input.length)
        return stop(
          fail(
            'CODEC_TRAILING_DATA',
            `${input.length - z.bytesWritten} bytes follow the end of the deflate stream`,
          ),
        );
      settled = true;
      const out = new Uint8Array(total);
      let pos = 0;
      for (const c of chunks) {
        out.set(c, pos);
        pos += c.length;
      }
      resolve(out);
    });
    z.end(input);
  });
}

/** Raw deflate at `level` (default DEFLATE_LEVEL) into a buffer of its own (transferable to a thread). */
export function deflateRaw(data: Uint8Array, level = DEFLATE_LEVEL): Promise<Uint8Array> {
  if (!Number.isInteger(level) || level < 0 || level > 9)
    throw new RangeError(`deflate level must be 0-9, got ${level}`);
  return new Promise((resolve, reject) => {
    zlibDeflateRaw(
      data,
      { level, memLevel: 8, windowBits: 15, strategy: constants.Z_DEFAULT_STRATEGY },
      (err, out) => {
        if (err) return reject(fail('CODEC_ENCODE_FAILED', `zlib deflate: ${err.message}`, err));
        if (out.byteOffset === 0 && out.buffer.byteLength === out.length) return resolve(out);
        const own = new Uint8Array(out.length);
        own.set(out);
        resolve(own);
      },
    );
  });
}

/** CRC-32 (ISO-HDLC, the zip CRC), optionally continuing from `value`. */
export function crc32(data: Uint8Array, value = 0): number {
  return zlibCrc32(data, value);
}

/**
 * Stable text for cache keys: the level and the zlib build, since different zlib builds (Node bundles
 * Chromium's) may deflate the same input to different, equally valid bytes.
 */
export function deflateSettingsKey(level = DEFLATE_LEVEL): string {
  return `deflate:${level}:zlib=${process.versions.zlib}`;
}
