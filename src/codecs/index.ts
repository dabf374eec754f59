/**
 * In-process MAR entry codecs (docs/ARCHITECTURE.md "Codecs"): detect, read settings, decode with
 * hostile-input limits, re-encode with the original settings. Library modules load on first use.
 */
import { codecError, codecPolicyError } from './errors.js';
import { readBz2Level } from './bz2.js';
import { deflateRaw, deflateSettingsKey, inflateRaw } from './deflate.js';
import { decodeContext } from './limits.js';
import type { Bz2Decoded, Bz2ReuseStats } from './bz2-blocks.js';
import type { CodecName, CodecProgress, CodecSettings, DecodeOptions } from './types.js';
import { readXzSettings, XZ_MAGIC } from './xz-header.js';

export type {
  CodecName,
  CodecProgress,
  CodecSettings,
  DecodeOptions,
  DecodeStats,
  XzCheck,
} from './types.js';
export { DEFAULT_MAX_OUTPUT_SIZE, DEFAULT_MAX_RATIO, PREFIX_CHECK_BYTES, RATIO_FREE_BYTES } from './types.js';
export type { CodecErrorCode } from './errors.js';

/** The codecs a stream's first bytes tell apart (raw deflate has no magic: a container names it). */
export type SniffedCodec = Exclude<CodecName, 'deflate'>;

/** By the first bytes only (docs/mar-format.md §9): `BZh` → bz2, xz magic → xz, else stored. */
export function detectCodec(bytes: Uint8Array): SniffedCodec {
  if (bytes.length >= 3 && bytes[0] === 0x42 && bytes[1] === 0x5a && bytes[2] === 0x68) return 'bz2';
  if (bytes.length >= XZ_MAGIC.length && XZ_MAGIC.every((b, i) => bytes[i] === b)) return 'xz';
  return 'none';
}

/** Settings from the headers only; FormatError (format 'bz2'/'xz') on malformed headers. */
export function readSettings(bytes: Uint8Array): CodecSettings {
  switch (detectCodec(bytes)) {
    case 'bz2':
      return { codec: 'bz2', level: readBz2Level(bytes) };
    case 'xz':
      return { codec: 'xz', ...readXzSettings(bytes) };
    default:
      return { codec: 'none' };
  }
}

/**
 * Stable text for cache keys, e.g. `xz:dict=8388608:x86:crc64`, `xz:dict=16777216:nox86:crc32`, `bz2:9`,
 * `deflate:6:zlib=1.3.1`, `none`.
 */
export function settingsKey(settings: CodecSettings): string {
  switch (settings.codec) {
    case 'deflate':
      return deflateSettingsKey(settings.level);
    case 'none':
      return 'none';
    case 'bz2':
      return `bz2:${settings.level}`;
    case 'xz':
      return `xz:dict=${settings.dictSize}:${settings.x86 ? 'x86' : 'nox86'}:${settings.check}`;
  }
}

/** Decodes an entry and reports the settings it was made with (bounds: DecodeOptions). */
export async function decompressWithSettings(
  bytes: Uint8Array,
  options?: DecodeOptions,
): Promise<{ data: Uint8Array; settings: CodecSettings }> {
  const { data, settings } = await decodeEntry(bytes, options);
  return { data, settings };
}

/**
 * The one decode path: xz after its index is checked against the limit; bzip2 block by block when
 * the layout is certain (streaming, stops at the limit), else whole-stream; stored entries as they are.
 */
async function decodeEntry(bytes: Uint8Array, options: DecodeOptions | undefined): Promise<DecodedEntry> {
  const settings = options?.settings ?? readSettings(bytes);
  const ctx = decodeContext(
    bytes.length,
    settings.codec === 'none' ? { ...options, maxRatio: Infinity } : options,
  );
  switch (settings.codec) {
    case 'bz2': {
      const { decodeBz2Blocks } = await import('./bz2-blocks.js');
      const blocks = await decodeBz2Blocks(bytes, ctx);
      if (blocks) return { data: blocks.data, settings, bz2Blocks: blocks };
      const { decodeBz2 } = await import('./bz2.js');
      const data = await decodeBz2(bytes, ctx);
      ctx.progress(bytes.length, bytes.length);
      return { data, settings };
    }
    case 'xz': {
      const { decodeXz } = await import('./xz.js');
      return { data: await decodeXz(bytes, ctx), settings };
    }
    case 'deflate': {
      const data = await inflateBounded(bytes, ctx);
      ctx.prefix.offer(data, true);
      return { data, settings };
    }
    case 'none': {
      if (bytes.length > ctx.limit) {
        throw codecError(
          'none',
          'CODEC_OUTPUT_TOO_LARGE',
          `stored entry of ${bytes.length} bytes is over the ${ctx.limit}-byte limit`,
        );
      }
      ctx.prefix.offer(bytes, true);
      ctx.progress(bytes.length, bytes.length);
      return { data: copy(bytes), settings };
    }
  }
}

export async function decompress(bytes: Uint8Array, options?: DecodeOptions): Promise<Uint8Array> {
  return (await decompressWithSettings(bytes, options)).data;
}

/**
 * A decoded entry and what its re-encoding may reuse: for bzip2, the original stream's blocks and the
 * uncompressed range each produced (bz2-blocks.ts), so `recompressEntry` copies unchanged blocks.
 */
export interface DecodedEntry {
  data: Uint8Array;
  settings: CodecSettings;
  bz2Blocks?: Bz2Decoded;
}

/** What `recompressEntry` reused (bzip2 block reuse) — absent when the whole entry was encoded. */
export type ReuseStats = Bz2ReuseStats;

/**
 * bzip2 block reuse is on unless `MARSIGN_BZ2_BLOCK_REUSE=0` (an escape hatch, and how the benchmark
 * measures the whole-stream path).
 */
export function bz2BlockReuseEnabled(): boolean {
  return process.env.MARSIGN_BZ2_BLOCK_REUSE !== '0';
}

/** Decodes an entry for re-signing: like `decompressWithSettings`, keeping what recompression can reuse. */
export async function decompressEntry(bytes: Uint8Array, options?: DecodeOptions): Promise<DecodedEntry> {
  const decoded = await decodeEntry(bytes, options);
  if (!bz2BlockReuseEnabled()) delete decoded.bz2Blocks;
  return decoded;
}

/**
 * `decompressEntry` for an entry the policy wants signed (workers/sign-entry.ts): the first decoded
 * bytes — one bzip2 block, one xz window of PREFIX_CHECK_BYTES — must start like a PE (`MZ`, and the
 * `PE\0\0` signature at e_lfanew when that lies inside them), else `PolicyError POLICY_NOT_PE` naming
 * the entry, before the rest is decoded. The caller still checks the whole file (`isPe`).
 */
export function decodeForSigning(
  bytes: Uint8Array,
  options: Omit<DecodeOptions, 'checkPrefix'> & { name: string },
): Promise<DecodedEntry> {
  const { name, ...rest } = options;
  return decompressEntry(bytes, {
    ...rest,
    checkPrefix: (prefix) => {
      if (!startsLikePe(prefix)) {
        throw codecPolicyError(
          'POLICY_NOT_PE',
          `${name} matches the signing policy but is not a PE file (starts ${Buffer.from(prefix.subarray(0, 4)).toString('hex') || '(empty)'})`,
          { details: { entry: name } },
        );
      }
    },
  });
}

/** `MZ`, and `PE\0\0` at e_lfanew (0x3C) when the prefix reaches it (the whole-file check is `isPe`). */
function startsLikePe(b: Uint8Array): boolean {
  if (b.length < 0x40 || b[0] !== 0x4d || b[1] !== 0x5a) return false;
  const lfanew = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0x3c, true);
  if (lfanew + 4 > b.length) return true;
  return b[lfanew] === 0x50 && b[lfanew + 1] === 0x45 && b[lfanew + 2] === 0 && b[lfanew + 3] === 0;
}

/**
 * Encodes `data` — the decoded entry's bytes after signing (a new buffer; `decoded.data` unchanged) —
 * with the entry's settings, reusing the unchanged bzip2 blocks of the original stream when it can.
 */
export async function recompressEntry(
  data: Uint8Array,
  decoded: DecodedEntry,
  onProgress?: CodecProgress,
): Promise<{ output: Uint8Array; reuse?: ReuseStats }> {
  if (decoded.bz2Blocks && decoded.settings.codec === 'bz2' && data.buffer !== decoded.data.buffer) {
    const { encodeBz2Reusing } = await import('./bz2-blocks.js');
    const r = await encodeBz2Reusing(data, decoded.bz2Blocks, onProgress);
    if (r) return { output: r.output, reuse: r.stats };
  }
  return { output: await compress(data, decoded.settings, onProgress) };
}

/**
 * Encodes `data` with exactly these settings (bz2 block size; xz dictionary, x86 BCJ, check).
 * `onProgress`: uncompressed bytes taken in, of `data.length` (xz streams it; the one-shot encoders
 * report once, when done).
 */
export async function compress(
  data: Uint8Array,
  settings: CodecSettings,
  onProgress?: CodecProgress,
): Promise<Uint8Array> {
  let out: Uint8Array;
  switch (settings.codec) {
    case 'bz2': {
      const { encodeBz2 } = await import('./bz2.js');
      out = await encodeBz2(data, settings.level);
      break;
    }
    case 'xz': {
      const { encodeXz } = await import('./xz.js');
      return encodeXz(data, settings, onProgress ? { onProgress } : {});
    }
    case 'deflate':
      out = await deflateRaw(data, settings.level);
      break;
    case 'none':
      out = copy(data);
  }
  onProgress?.(data.length, data.length);
  return out;
}

/** Raw inflate within the decode's bound (size cap and ratio cap, whichever is lower), counted. */
async function inflateBounded(bytes: Uint8Array, ctx: ReturnType<typeof decodeContext>): Promise<Uint8Array> {
  let data: Uint8Array;
  try {
    data = await inflateRaw(bytes, {
      maxOutputSize: ctx.limit,
      maxRatio: Infinity,
      onProgress: ctx.progress,
    });
  } catch (err) {
    if ((err as { code?: string }).code === 'CODEC_OUTPUT_TOO_LARGE') {
      ctx.stats.decodedBytes += ctx.limit;
      throw ctx.exceeded('deflate');
    }
    throw err;
  }
  ctx.stats.decodedBytes += data.length;
  return data;
}

/** A copy in its own ArrayBuffer (never a slice of Node's shared pool), so it can be transferred. */
function copy(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length);
  out.set(bytes);
  return out;
}
