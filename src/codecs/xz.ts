/**
 * xz entries: decode with node-liblzma (system liblzma 5.4, fastest measured), encode with
 * node-liblzma when a preset has exactly the wanted dictionary, else lzma-native (explicit dict_size).
 * Libraries are imported lazily so loading this module costs nothing until an xz entry is seen.
 */
import { createRequire } from 'node:module';
import { codecError } from './errors.js';
import type { DecodeContext } from './limits.js';
import type { CodecProgress, XzCheck } from './types.js';
import { PREFIX_CHECK_BYTES } from './types.js';
import { inspectXz, lzma2DictSize, XZ_FILTER_X86, XZ_MAX_DICT_SIZE } from './xz-header.js';

/**
 * xz preset levels by the dictionary they use (liblzma `lzma_lzma_preset`: dict_pow2 = 18, 20, 21,
 * 22, 22, 23, 23, 24, 25, 26). Where two levels share a dictionary the higher, Mozilla's (`--lzma2` =
 * 6), is used. Extreme (`-e`) or not is XZ_EXTREME (see docs/BENCHMARKS.md "Codecs").
 */
export const XZ_PRESET_BY_DICT: ReadonlyMap<number, number> = new Map([
  [256 * 1024, 0],
  [1024 * 1024, 1],
  [2 * 1024 * 1024, 2],
  [4 * 1024 * 1024, 4],
  [8 * 1024 * 1024, 6],
  [16 * 1024 * 1024, 7],
  [32 * 1024 * 1024, 8],
  [64 * 1024 * 1024, 9],
]);
/** Non-extreme presets: measured ~2× faster than `-e` for <0.5% larger output on PE files. */
export const XZ_EXTREME = false;
/** LZMA_PRESET_EXTREME (lzma.h). */
const PRESET_EXTREME = 0x80000000;
/** Output is decoded into windows of this size (node-liblzma refuses buffers over 512 MB). */
const DECODE_WINDOW = 16 * 1024 * 1024;
/** node-liblzma refuses any single buffer over 512 MB (MAR files are at most 500 MiB, so entries fit). */
export const XZ_MAX_INPUT = 512 * 1024 * 1024;
/** Input pieces and output chunk size for encoding. */
const ENCODE_CHUNK = 1024 * 1024;
const LZMA_OK = 0;
const LZMA_STREAM_END = 1;
const LZMA_FINISH = 3;
const LZMA_RET_NAMES: Record<number, string> = {
  5: 'MEM_ERROR',
  6: 'MEMLIMIT_ERROR',
  7: 'FORMAT_ERROR',
  8: 'OPTIONS_ERROR',
  9: 'DATA_ERROR',
  10: 'BUF_ERROR',
  11: 'PROG_ERROR',
};
const CHECK_CODES: Record<XzCheck, number> = { none: 0, crc32: 1, crc64: 4, sha256: 10 };

interface NativeCoder {
  code(
    flush: number,
    input: Buffer | null,
    inOff: number,
    availIn: number | undefined,
    out: Buffer,
    outOff: number,
    cb: (ret: number, availIn: number, availOut: number) => boolean,
  ): void;
  close(): void;
}

type NodeLiblzma = typeof import('node-liblzma');
let liblzma: Promise<NodeLiblzma> | undefined;
const loadLiblzma = (): Promise<NodeLiblzma> => (liblzma ??= import('node-liblzma'));

/**
 * Decodes one xz entry. The container is validated first (inspectXz): single stream, no trailing
 * bytes, supported filters, dictionary ≤ 64 MiB, and the index's declared size within the context's
 * limit (size cap and ratio cap) — a bomb is refused before one byte is decoded. liblzma then decodes
 * into a buffer of exactly the declared size + 1; any byte beyond it means the index lied, so decoding
 * stops there: no xz entry decodes more than min(declared, limit) + 1 bytes. With a prefix check the
 * first window is PREFIX_CHECK_BYTES, checked before the rest is decoded.
 */
export async function decodeXz(bytes: Uint8Array, ctx: DecodeContext): Promise<Uint8Array> {
  if (bytes.length > XZ_MAX_INPUT) {
    throw codecError('xz', 'CODEC_UNSUPPORTED', `xz entry of ${bytes.length} bytes is over ${XZ_MAX_INPUT}`);
  }
  const info = inspectXz(bytes);
  if (info.uncompressedSize > ctx.limit) throw ctx.exceeded('xz', info.uncompressedSize);
  const expected = info.uncompressedSize;
  const lib = await loadLiblzma();
  const out = new Uint8Array(expected + 1);
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const stream = new lib.Unxz();
  const coder = (stream as unknown as { lzma: NativeCoder }).lzma;
  let produced = 0;
  let inOff = 0;
  try {
    for (;;) {
      const want = ctx.prefix.pending ? PREFIX_CHECK_BYTES : DECODE_WINDOW;
      const window = Math.min(want, out.length - produced);
      const target = Buffer.from(out.buffer, out.byteOffset + produced, window);
      const [ret, availIn, availOut] = await new Promise<[number, number, number]>((resolve) => {
        coder.code(LZMA_FINISH, input, inOff, input.length - inOff, target, 0, (r, ai, ao) => {
          resolve([r, ai, ao]);
          return false;
        });
      });
      produced += window - availOut;
      ctx.stats.decodedBytes += window - availOut;
      inOff = input.length - availIn;
      if (ret !== LZMA_OK && ret !== LZMA_STREAM_END) {
        throw codecError('xz', 'CODEC_CORRUPT', `liblzma: ${LZMA_RET_NAMES[ret] ?? ret}`, inOff);
      }
      if (produced > expected) {
        throw codecError(
          'xz',
          'CODEC_CORRUPT',
          `xz data decodes to more than the ${expected} bytes its index declares`,
        );
      }
      // Complete only when the stream ended with the declared size (else the error below comes first).
      ctx.prefix.offer(out.subarray(0, produced), ret === LZMA_STREAM_END && produced === expected);
      ctx.progress(inOff, bytes.length);
      if (ret === LZMA_STREAM_END) break;
      if (availOut !== 0 && availIn === 0) {
        throw codecError('xz', 'CODEC_CORRUPT', 'xz stream ended early', bytes.length);
      }
    }
  } finally {
    coder.close();
  }
  if (produced !== expected) {
    throw codecError('xz', 'CODEC_CORRUPT', `decoded ${produced} bytes, index declares ${expected}`);
  }
  return out.subarray(0, expected);
}

type LzmaNative = {
  createStream(coder: string, opts: object): NodeJS.ReadWriteStream;
  FILTER_X86: number;
  FILTER_LZMA2: number;
};
let lzmaNative: LzmaNative | undefined;
const loadLzmaNative = (): LzmaNative =>
  (lzmaNative ??= createRequire(import.meta.url)('lzma-native') as LzmaNative);

export interface XzEncodeSettings {
  dictSize: number;
  x86: boolean;
  check: XzCheck;
}

/** Which library and preset `encodeXz` uses for these settings (for tests, benchmarks, docs). */
export function xzEncoderFor(s: XzEncodeSettings): {
  library: 'node-liblzma' | 'lzma-native';
  preset: number;
} {
  const level = XZ_PRESET_BY_DICT.get(s.dictSize);
  if (level !== undefined) return { library: 'node-liblzma', preset: level };
  return { library: 'lzma-native', preset: 6 };
}

function validateEncodeSettings(s: XzEncodeSettings): void {
  let ok = Number.isInteger(s.dictSize) && s.dictSize >= 4096 && s.dictSize <= XZ_MAX_DICT_SIZE;
  // The block header can only express 2^n or 2^n + 2^(n-1); anything else would be rounded up.
  if (ok) ok = [...Array(40).keys()].some((p) => lzma2DictSize(p) === s.dictSize);
  if (!ok) {
    throw codecError(
      'xz',
      'CODEC_UNSUPPORTED',
      `cannot encode with an LZMA2 dictionary of ${s.dictSize} bytes`,
    );
  }
  if (!(s.check in CHECK_CODES)) throw codecError('xz', 'CODEC_UNSUPPORTED', `unknown xz check ${s.check}`);
}

/** Encodes `data` as one xz stream with the given dictionary, BCJ filter and check. */
export async function encodeXz(
  data: Uint8Array,
  s: XzEncodeSettings,
  opts: { extreme?: boolean; presetOverride?: number; onProgress?: CodecProgress } = {},
): Promise<Uint8Array> {
  validateEncodeSettings(s);
  const extreme = opts.extreme ?? XZ_EXTREME;
  const choice = xzEncoderFor(s);
  const level = opts.presetOverride ?? choice.preset;
  const preset = extreme ? (level | PRESET_EXTREME) >>> 0 : level;
  const input = Buffer.from(data.buffer, data.byteOffset, data.length);
  let out: Buffer;
  if (choice.library === 'node-liblzma') {
    const lib = await loadLiblzma();
    const stream = new lib.Xz({
      preset,
      check: CHECK_CODES[s.check],
      filters: s.x86 ? [lib.filter.X86, lib.filter.LZMA2] : [lib.filter.LZMA2],
      threads: 1,
      chunkSize: ENCODE_CHUNK,
    });
    out = await collect(stream, input, opts.onProgress);
  } else {
    const ln = loadLzmaNative();
    // lzma-native applies a `preset` after (over) dictSize, so the preset's other parameters are spelled out.
    const lzma2 = {
      id: ln.FILTER_LZMA2,
      options: { dictSize: s.dictSize, ...lzmaPresetParams(level, extreme) },
    };
    const filters = s.x86 ? [{ id: ln.FILTER_X86 }, lzma2] : [lzma2];
    out = await collect(
      ln.createStream('streamEncoder', { filters, check: CHECK_CODES[s.check] }),
      input,
      opts.onProgress,
    );
  }
  // One copy out of Node's pooled/shared memory so the result can be transferred to another thread.
  const result = new Uint8Array(out.length);
  result.set(out);
  return result;
}

/**
 * The LZMA parameters of preset `level` other than the dictionary (liblzma lzma_encoder_presets.c):
 * levels 4-9 use mode normal, bt4, nice_len 16/32/64; extreme uses nice_len 273, depth 512 (192/0 at 3 and 5).
 */
export function lzmaPresetParams(
  level: number,
  extreme: boolean,
): { lc: number; lp: number; pb: number; mode: number; niceLen: number; mf: number; depth: number } {
  const MODE_FAST = 1;
  const MODE_NORMAL = 2;
  const MF_HC3 = 0x03;
  const MF_HC4 = 0x04;
  const MF_BT4 = 0x14;
  const base = { lc: 3, lp: 0, pb: 2 };
  let p: { mode: number; niceLen: number; mf: number; depth: number };
  if (level <= 3) {
    p = {
      mode: MODE_FAST,
      mf: level === 0 ? MF_HC3 : MF_HC4,
      niceLen: level <= 1 ? 128 : 273,
      depth: [4, 8, 24, 48][level]!,
    };
  } else {
    p = { mode: MODE_NORMAL, mf: MF_BT4, niceLen: level === 4 ? 16 : level === 5 ? 32 : 64, depth: 0 };
  }
  if (extreme) {
    p = {
      ...p,
      mode: MODE_NORMAL,
      mf: MF_BT4,
      ...(level === 3 || level === 5 ? { niceLen: 192, depth: 0 } : { niceLen: 273, depth: 512 }),
    };
  }
  return { ...base, ...p };
}

/**
 * Feeds `input` in ENCODE_CHUNK pieces (node-liblzma rejects a single input buffer over 512 MB; the
 * liblzma output does not depend on how the input is split) and concatenates the output. A piece's
 * write callback runs once the encoder has taken it in: that is the progress reported.
 */
function collect(stream: NodeJS.ReadWriteStream, input: Buffer, onProgress?: CodecProgress): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let fed = 0;
    const taken = (n: number) => (): void => {
      fed += n;
      onProgress?.(fed, input.length);
    };
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    for (let i = ENCODE_CHUNK; i < input.length; i += ENCODE_CHUNK) {
      stream.write(input.subarray(i - ENCODE_CHUNK, i), taken(ENCODE_CHUNK));
    }
    const last = input.subarray(Math.max(0, Math.ceil(input.length / ENCODE_CHUNK) - 1) * ENCODE_CHUNK);
    stream.end(last, taken(last.length));
  });
}

export { XZ_FILTER_X86 };
