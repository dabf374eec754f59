/**
 * bzip2 entries.
 * - decode: block by block (bz2-blocks.ts) when the stream's layout is certain; else here, whole-stream:
 *   @foxglove/wasm-bz2 (WASM libbzip2, 3.9× unbzip2-stream). Its only call is
 *   BZ2_bzBuffToBuffDecompress, which needs the output size (MAR does not store it): over-allocate,
 *   grow ×4 on BZ_OUTBUFF_FULL, never past the context's limit (size and ratio caps). Outputs that may
 *   exceed what the WASM heap can hold (WASM_MAX_OUTPUT) go to unbzip2-stream, streaming, stopping as
 *   soon as the limit is passed.
 * - encode: libbzip2-wasm (libbzip2 1.0.x, byte-identical to `bzip2 -N`).
 * Both WASM modules are created lazily, once per thread, and their process-wide error handlers removed.
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { codecError } from './errors.js';
import type { DecodeContext } from './limits.js';
import type { DecodeStats } from './types.js';
import { PREFIX_CHECK_BYTES } from './types.js';

const require = createRequire(import.meta.url);

/** wasm-bz2's heap is capped at 2 GiB; keep output + input + state well under it. */
export const WASM_MAX_OUTPUT = 768 * 1024 * 1024;
/** After a call that grew a WASM heap past this, drop the instance so the memory is returned. */
const WASM_HEAP_KEEP = 256 * 1024 * 1024;
/** First output guess, as a multiple of the compressed size (PE files compress to ~0.3). */
const FIRST_GUESS_RATIO = 6;
const MIN_FIRST_GUESS = 1024 * 1024;
const GROWTH = 4;
/** libbzip2-wasm's heap is fixed at creation (default 16 MiB); it must hold input + output + state. */
const ENCODER_MIN_HEAP = 64 * 1024 * 1024;

export const BZ_OUTBUFF_FULL = -8;
const BZ_ERRORS: Record<number, string> = {
  [-1]: 'BZ_SEQUENCE_ERROR',
  [-2]: 'BZ_PARAM_ERROR',
  [-3]: 'BZ_MEM_ERROR',
  [-4]: 'BZ_DATA_ERROR',
  [-5]: 'BZ_DATA_ERROR_MAGIC',
  [-6]: 'BZ_IO_ERROR',
  [-7]: 'BZ_UNEXPECTED_EOF',
  [-8]: 'BZ_OUTBUFF_FULL',
  [-9]: 'BZ_CONFIG_ERROR',
};

/** End-of-stream marker (sqrt(pi)) that precedes the combined CRC at the end of every bzip2 stream. */
export const EOS_MAGIC = 0x177245385090n;

interface WasmBz2Module {
  HEAPU8: Uint8Array;
  _malloc(n: number): number;
  _free(p: number): void;
  decompress(
    dst: number,
    dstSize: number,
    src: number,
    srcSize: number,
    small: number,
  ): {
    code: number;
    error?: string;
    buffer?: Uint8Array;
  };
}

interface LibBzip2Module {
  HEAPU8: Uint8Array;
  compressBZ2(data: Uint8Array, blockSize: number, workFactor: number): { error: number; output: Uint8Array };
}

/**
 * Starts an Emscripten module factory and removes the process `uncaughtException`/`unhandledRejection`
 * handlers it installs (they rethrow or abort). The factories add them synchronously, so the diff is
 * taken before returning: a handler another module adds later is never touched.
 */
function withoutProcessHandlers<T>(start: () => T): T {
  const events = ['uncaughtException', 'unhandledRejection'];
  const emitter = process as unknown as NodeJS.EventEmitter;
  const before = events.map((e) => new Set(emitter.listeners(e)));
  try {
    return start();
  } finally {
    events.forEach((e, i) => {
      for (const l of emitter.listeners(e)) {
        if (!before[i]!.has(l)) emitter.removeListener(e, l as (...a: unknown[]) => void);
      }
    });
  }
}

let decoder: Promise<WasmBz2Module> | undefined;
export function loadDecoder(): Promise<WasmBz2Module> {
  return (decoder ??= withoutProcessHandlers(() => {
    const factory = require('@foxglove/wasm-bz2/wasm/module.js') as
      (() => Promise<WasmBz2Module>) | { default: () => Promise<WasmBz2Module> };
    return (typeof factory === 'function' ? factory : factory.default)();
  }));
}

let encoder: { heap: number; module: Promise<LibBzip2Module> } | undefined;
function loadEncoder(heap: number): Promise<LibBzip2Module> {
  if (encoder && encoder.heap >= heap) return encoder.module;
  const size = Math.max(ENCODER_MIN_HEAP, Math.ceil(heap / 65536) * 65536);
  const factory = require('libbzip2-wasm') as (o: object) => { then(f: (m: unknown) => void): void };
  const thenable = withoutProcessHandlers(() => factory({ TOTAL_MEMORY: size }));
  const module = new Promise<LibBzip2Module>((resolve) => {
    // The Module is a thenable resolving to itself: `await` on it would loop forever.
    thenable.then((m) => {
      delete (m as { then?: unknown }).then;
      resolve(m as LibBzip2Module);
    });
  });
  encoder = { heap: size, module };
  return module;
}

/** The block-size digit of a `BZh1`..`BZh9` header, validated with the first block/EOS magic. */
export function readBz2Level(bytes: Uint8Array): number {
  if (bytes.length < 4 || bytes[0] !== 0x42 || bytes[1] !== 0x5a || bytes[2] !== 0x68) {
    throw codecError('bz2', 'CODEC_CORRUPT', 'not a bzip2 stream (no BZh header)', 0);
  }
  const level = bytes[3]! - 0x30;
  if (level < 1 || level > 9) {
    throw codecError(
      'bz2',
      'CODEC_CORRUPT',
      `bzip2 block size byte 0x${bytes[3]!.toString(16)} is not 1-9`,
      3,
    );
  }
  if (bytes.length < 10)
    throw codecError('bz2', 'CODEC_CORRUPT', 'bzip2 stream truncated after its header', 4);
  const magic = Buffer.from(bytes.buffer, bytes.byteOffset + 4, 6).toString('hex');
  if (magic !== '314159265359' && magic !== '177245385090') {
    throw codecError('bz2', 'CODEC_CORRUPT', `bzip2 block magic is ${magic}`, 4);
  }
  return level;
}

/**
 * Bit offsets of every occurrence of the 48-bit end-of-stream magic. A lone stream has exactly one,
 * ending 32 CRC bits + <8 padding bits before the last byte; an earlier one is either the end of a
 * first stream (trailing data follows) or a chance match inside Huffman data (~2^-48 per bit).
 */
export function findEosMarkers(bytes: Uint8Array): number[] {
  return findMagic48(bytes, EOS_MAGIC);
}

/** Bit offsets (ascending) of every occurrence of a 48-bit pattern, at any bit alignment. */
export function findMagic48(bytes: Uint8Array, magic: bigint): number[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const hits = new Set<number>();
  for (let s = 0; s < 8; s++) {
    // Bytes k+1..k+4 of a marker starting at bit 8k+s hold marker bits 8-s .. 39-s.
    const needle = Buffer.alloc(4);
    needle.writeUInt32BE(Number((magic >> BigInt(8 + s)) & 0xffffffffn));
    for (let j = buf.indexOf(needle, 0); j >= 0; j = buf.indexOf(needle, j + 1)) {
      const k = j - 1;
      if (k < 0 || k + Math.ceil((s + 48) / 8) > buf.length) continue;
      let v = 0n;
      for (let i = 0; i < 7 && k + i < buf.length; i++) v = (v << 8n) | BigInt(buf[k + i]!);
      const width = 8n * BigInt(Math.min(7, buf.length - k));
      const bits = (v >> (width - 48n - BigInt(s))) & 0xffffffffffffn;
      if (bits === magic) hits.add(8 * k + s);
    }
  }
  return [...hits].sort((a, b) => a - b);
}

/** Byte length of a stream whose end-of-stream marker starts at bit `bit`. */
const streamEndFor = (bit: number): number => Math.ceil((bit + 48 + 32) / 8);

/**
 * One BZ2_bzBuffToBuffDecompress call into a `dstSize` buffer. With `partial`, a full buffer
 * (BZ_OUTBUFF_FULL) still returns the `dstSize` bytes decoded so far (libbzip2 fills it before it
 * gives up). `stats.decodedBytes` counts what was written.
 */
export function wasmDecodeOnce(
  m: WasmBz2Module,
  bytes: Uint8Array,
  dstSize: number,
  stats?: DecodeStats,
  partial = false,
): { code: number; out?: Uint8Array } {
  const src = m._malloc(bytes.length);
  const dst = m._malloc(dstSize);
  if (src === 0 || dst === 0) {
    if (src) m._free(src);
    if (dst) m._free(dst);
    return { code: -3 };
  }
  try {
    m.HEAPU8.set(bytes, src);
    const r = m.decompress(dst, dstSize, src, bytes.length, 0);
    if (r.code === BZ_OUTBUFF_FULL) {
      if (stats) stats.decodedBytes += dstSize;
      return partial ? { code: r.code, out: m.HEAPU8.slice(dst, dst + dstSize) } : { code: r.code };
    }
    if (r.code !== 0 || !r.buffer) return { code: r.code };
    const out = new Uint8Array(r.buffer.length);
    out.set(r.buffer);
    if (stats) stats.decodedBytes += out.length;
    return { code: 0, out };
  } finally {
    m._free(src);
    m._free(dst);
  }
}

/** Lets the event loop run (signal handlers, other I/O) between synchronous WASM calls. */
export const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Decodes one bzip2 entry (single stream, no trailing bytes) as a whole, within `ctx.limit`. With a
 * pending prefix check, a first call into a PREFIX_CHECK_BYTES buffer yields the prefix to check.
 */
export async function decodeBz2(bytes: Uint8Array, ctx: DecodeContext): Promise<Uint8Array> {
  readBz2Level(bytes);
  const markers = findEosMarkers(bytes);
  const atEnd = markers.filter((b) => streamEndFor(b) === bytes.length);
  if (atEnd.length === 0) {
    const first = markers[0];
    if (first !== undefined && streamEndFor(first) < bytes.length) {
      // Tell "stream + trailing bytes" from a chance match by decoding only up to that marker below.
    } else {
      throw codecError(
        'bz2',
        'CODEC_CORRUPT',
        'bzip2 stream has no end-of-stream marker at its end',
        bytes.length,
      );
    }
  }
  const limit = ctx.limit;
  let out: Uint8Array | undefined;
  const m = await loadDecoder();
  if (ctx.prefix.pending) {
    const r = wasmDecodeOnce(m, bytes, Math.min(PREFIX_CHECK_BYTES, limit + 1), ctx.stats, true);
    if (r.code === 0) out = r.out;
    else if (r.code === BZ_OUTBUFF_FULL && r.out) ctx.prefix.offer(r.out, false);
    // Any other code: the first call below reports it.
    await yieldToLoop();
  }
  let size = Math.min(limit + 1, Math.max(MIN_FIRST_GUESS, bytes.length * FIRST_GUESS_RATIO));
  while (!out) {
    if (size > WASM_MAX_OUTPUT) {
      out = await decodeBz2Streaming(bytes, ctx);
      break;
    }
    const r = wasmDecodeOnce(m, bytes, size, ctx.stats);
    if (r.code === 0 && r.out) {
      out = r.out;
      break;
    }
    if (r.code !== BZ_OUTBUFF_FULL) {
      dropDecoderIfLarge(m);
      throw codecError('bz2', 'CODEC_CORRUPT', `libbzip2: ${BZ_ERRORS[r.code] ?? r.code}`);
    }
    if (size > limit) {
      dropDecoderIfLarge(m);
      throw ctx.exceeded('bz2');
    }
    size = Math.min(limit + 1, size * GROWTH);
    await yieldToLoop();
  }
  dropDecoderIfLarge(m);
  if (out.length > limit) throw ctx.exceeded('bz2');
  // libbzip2 stops at the first end-of-stream marker and ignores what follows: refuse any bytes after it.
  for (const bit of markers) {
    const end = streamEndFor(bit);
    if (end >= bytes.length) break;
    if (
      out.length + 1 + end > WASM_MAX_OUTPUT
        ? startsStream(bytes, end)
        : endsStream(m, bytes, end, out.length)
    ) {
      throw codecError(
        'bz2',
        'CODEC_TRAILING_DATA',
        `${bytes.length - end} bytes after the end of the bzip2 stream`,
        end,
      );
    }
  }
  if (atEnd.length === 0) {
    throw codecError(
      'bz2',
      'CODEC_CORRUPT',
      'bzip2 stream has no end-of-stream marker at its end',
      bytes.length,
    );
  }
  ctx.prefix.offer(out, true);
  return out;
}

/** Whether a complete stream is exactly bytes[0, end) (decoding it, output size already known). */
function endsStream(m: WasmBz2Module, bytes: Uint8Array, end: number, outLength: number): boolean {
  const r = wasmDecodeOnce(m, bytes.subarray(0, end), outLength + 1);
  dropDecoderIfLarge(m);
  return r.code === 0;
}

/** Whether another bzip2 stream header starts at `at` (cheap test used for huge outputs). */
function startsStream(bytes: Uint8Array, at: number): boolean {
  try {
    readBz2Level(bytes.subarray(at));
    return true;
  } catch {
    return false;
  }
}

export function dropDecoderIfLarge(m: WasmBz2Module): void {
  if (m.HEAPU8.length > WASM_HEAP_KEEP) decoder = undefined;
}

/**
 * Streaming fallback for very large outputs of streams the block decoder cannot split: unbzip2-stream,
 * stopped as soon as the count passes `ctx.limit`; the prefix check runs on the first chunks.
 */
export function decodeBz2Streaming(bytes: Uint8Array, ctx: DecodeContext): Promise<Uint8Array> {
  const unbzip2 = require('unbzip2-stream') as () => NodeJS.ReadWriteStream & { destroy?: () => void };
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let done = false;
    const joined = (): Uint8Array => joinParts(chunks, total);
    const source = Readable.from(chunked(bytes), { objectMode: false });
    const finish = (err: Error | undefined): void => {
      if (done) return;
      done = true;
      if (err) {
        source.destroy();
        reject(err);
        return;
      }
      try {
        const out = joined();
        ctx.prefix.offer(out, true);
        resolve(out);
      } catch (e) {
        reject(e as Error);
      }
    };
    const stream = unbzip2();
    stream.on('data', (c: Buffer) => {
      if (done) return;
      total += c.length;
      ctx.stats.decodedBytes += c.length;
      if (total > ctx.limit) {
        finish(ctx.exceeded('bz2'));
        return;
      }
      chunks.push(c);
      if (ctx.prefix.pending && total >= PREFIX_CHECK_BYTES) {
        try {
          ctx.prefix.offer(joined(), false);
        } catch (e) {
          finish(e as Error);
        }
      }
    });
    stream.on('error', (e: Error) =>
      finish(codecError('bz2', 'CODEC_CORRUPT', `unbzip2-stream: ${e.message}`, undefined, { cause: e })),
    );
    stream.on('end', () => finish(undefined));
    source.pipe(stream as unknown as NodeJS.WritableStream);
  });
}

/** `parts` joined into one buffer that owns its ArrayBuffer (transferable; Buffer.concat may pool). */
export function joinParts(parts: Uint8Array[], total: number): Uint8Array {
  const data = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    data.set(p, o);
    o += p.length;
  }
  return data;
}

function* chunked(bytes: Uint8Array): Generator<Buffer> {
  const step = 1024 * 1024;
  for (let i = 0; i < bytes.length; i += step) {
    yield Buffer.from(bytes.buffer, bytes.byteOffset + i, Math.min(step, bytes.length - i));
  }
}

/** Encodes `data` as one bzip2 stream with block size `level` (1-9), like `bzip2 -level`. */
export async function encodeBz2(data: Uint8Array, level: number): Promise<Uint8Array> {
  if (!Number.isInteger(level) || level < 1 || level > 9) {
    throw codecError('bz2', 'CODEC_UNSUPPORTED', `bzip2 block size ${level} is not 1-9`);
  }
  // libbzip2-wasm copies the input in, and compresses into a buffer of ~1.01×input + 600 bytes.
  const need = 2 * data.length + level * 1_000_000 + 16 * 1024 * 1024;
  const m = await loadEncoder(need);
  const r = m.compressBZ2(data, level, 30);
  if (r.error !== 0) {
    encoder = undefined;
    throw codecError(
      'bz2',
      'CODEC_ENCODE_FAILED',
      `libbzip2 compression failed: ${BZ_ERRORS[r.error] ?? r.error}`,
    );
  }
  const out = new Uint8Array(r.output.length);
  out.set(r.output);
  if (m.HEAPU8.length > WASM_HEAP_KEEP) encoder = undefined;
  return out;
}
