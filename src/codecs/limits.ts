/**
 * Output bounds of one decode (docs/ARCHITECTURE.md "Codecs", hostile input): the per-entry size cap
 * and the compression-ratio cap, whichever is lower, the typed error for passing it, the work counter
 * and the early prefix check. Shared by bz2.ts, bz2-blocks.ts and xz.ts.
 */
import type { FormatError } from '../errors.js';
import { codecError } from './errors.js';
import type { CodecName, CodecProgress, DecodeOptions, DecodeStats } from './types.js';
import { DEFAULT_MAX_OUTPUT_SIZE, DEFAULT_MAX_RATIO, PREFIX_CHECK_BYTES, RATIO_FREE_BYTES } from './types.js';

export interface DecodeContext {
  /** Largest output allowed, in bytes. */
  limit: number;
  /** The typed error for an output over `limit`; `declared` when the container states the size (xz). */
  exceeded(format: CodecName, declared?: number): FormatError;
  stats: DecodeStats;
  /** Runs `checkPrefix` once, on at least PREFIX_CHECK_BYTES bytes or the complete output. */
  prefix: PrefixCheck;
  /** Stored bytes consumed so far of the whole entry (DecodeOptions.onProgress); a no-op when unset. */
  progress: CodecProgress;
}

export class PrefixCheck {
  private done: boolean;

  constructor(private readonly check: ((prefix: Uint8Array) => void) | undefined) {
    this.done = check === undefined;
  }

  /** Whether the check still waits for bytes (decoders then decode a small first piece). */
  get pending(): boolean {
    return !this.done;
  }

  /** Offers the bytes decoded so far; runs the check when there are enough or `complete`. */
  offer(decoded: Uint8Array, complete: boolean): void {
    if (this.done || (!complete && decoded.length < PREFIX_CHECK_BYTES)) return;
    this.done = true;
    this.check!(decoded);
  }
}

const noProgress: CodecProgress = () => undefined;

function validated(name: string, v: number, allowInfinity: boolean): number {
  const ok = allowInfinity
    ? v === Infinity || (Number.isFinite(v) && v > 0)
    : Number.isSafeInteger(v) && v >= 0;
  if (!ok)
    throw new RangeError(
      `${name} must be a ${allowInfinity ? 'positive number' : 'non-negative integer'}, got ${v}`,
    );
  return v;
}

/**
 * The bound for an entry of `storedSize` bytes: maxOutputSize, lowered to
 * max(RATIO_FREE_BYTES, maxRatio × storedSize) when that is smaller. Stored ('none') entries have
 * ratio 1, so only the size cap applies to them.
 */
export function decodeContext(storedSize: number, options: DecodeOptions | undefined): DecodeContext {
  const cap = validated('maxOutputSize', options?.maxOutputSize ?? DEFAULT_MAX_OUTPUT_SIZE, false);
  const ratio = validated('maxRatio', options?.maxRatio ?? DEFAULT_MAX_RATIO, true);
  const byRatio = Math.max(RATIO_FREE_BYTES, Math.floor(ratio * storedSize));
  const stats = options?.stats ?? { decodedBytes: 0 };
  const prefix = new PrefixCheck(options?.checkPrefix);
  const progress = options?.onProgress ?? noProgress;
  if (byRatio < cap) {
    return {
      limit: byRatio,
      stats,
      prefix,
      progress,
      exceeded: (format, declared) =>
        codecError(
          format,
          'CODEC_RATIO_TOO_HIGH',
          `${format} entry of ${storedSize} bytes ${declared === undefined ? 'decodes to more than' : 'declares'} ${declared ?? byRatio} bytes: over the ${ratio}:1 compression-ratio limit (${byRatio} bytes)`,
        ),
    };
  }
  return {
    limit: cap,
    stats,
    prefix,
    progress,
    exceeded: (format, declared) =>
      codecError(
        format,
        'CODEC_OUTPUT_TOO_LARGE',
        declared === undefined
          ? `${format} entry decodes to more than ${cap} bytes`
          : `${format} entry declares ${declared} uncompressed bytes, over the ${cap}-byte limit`,
      ),
  };
}
