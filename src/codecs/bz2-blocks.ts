/**
 * bzip2 block reuse: re-sign without recompressing what did not change.
 *
 * A bzip2 stream is `BZh<level>`, then blocks, then an end-of-stream marker with the combined CRC.
 * Every block is self-contained (its own BWT, Huffman tables and RLE state; bzip2recover relies on
 * this) and starts with the 48-bit magic 0x314159265359 followed by the CRC of its uncompressed bytes,
 * at any *bit* offset. The combined CRC is a fold of the block CRCs: `c = rotl(c, 1) ^ blockCrc`.
 *
 * Authenticode signing changes a PE only in its headers (checksum, certificate-table directory entry:
 * the first block) and appends the signature at the end. So, after decoding an entry block by block
 * (which maps every compressed block to the uncompressed range it produces), the signed file can be
 * re-encoded by copying every block whose bytes did not change bit for bit, and encoding only the
 * changed ranges (normally the first block and the appended signature) with libbzip2. The result is a
 * valid single bzip2 stream with the same block-size level; it differs from `bzip2 -9` of the signed
 * file only in where blocks end, which no decoder cares about.
 *
 * Every step has a way out: a stream this module cannot split with certainty (a chance magic match in
 * Huffman data, several streams, a CRC that does not fold, a block that does not decode alone) returns
 * `undefined`, and the caller uses the plain whole-stream decode/encode (bz2.ts), which also produces
 * the proper typed error for a corrupt stream.
 */
import {
  BZ_OUTBUFF_FULL,
  dropDecoderIfLarge,
  encodeBz2,
  EOS_MAGIC,
  findEosMarkers,
  findMagic48,
  joinParts,
  loadDecoder,
  readBz2Level,
  WASM_MAX_OUTPUT,
  wasmDecodeOnce,
  yieldToLoop,
} from './bz2.js';
import type { DecodeContext } from './limits.js';
import type { CodecProgress } from './types.js';

const BLOCK_MAGIC = 0x314159265359n;
const HEADER_BITS = 32;
const MAGIC_BITS = 48;
const CRC_BITS = 32;
/** Up to this many blocks are decoded one by one whatever their size. */
const MAX_BLOCKS_ANY_SIZE = 64;
/** Beyond that, blocks must average at least this many compressed bytes (real ones: 10 kB-1 MB). */
const MIN_AVERAGE_BLOCK_BYTES = 4096;

export interface Bz2Block {
  /** Bit offset of the block magic in the stream. */
  start: number;
  /** Bit offset just past the block (the next block's magic, or the end-of-stream marker). */
  end: number;
  /** CRC of the block's uncompressed bytes, as stored after its magic. */
  crc: number;
}

export interface Bz2Layout {
  level: number;
  blocks: Bz2Block[];
  /** Bit offset of the end-of-stream marker. */
  eos: number;
  combinedCrc: number;
}

/** A stream decoded block by block: its bytes and, per block, the range of `data` it produced. */
export interface Bz2Decoded {
  source: Uint8Array;
  layout: Bz2Layout;
  data: Uint8Array;
  /** `ends[i]` = end offset in `data` of block i (block i starts at `ends[i - 1]`, or 0). */
  ends: number[];
}

export interface Bz2ReuseStats {
  /** Blocks copied from the original stream. */
  reusedBlocks: number;
  /** Uncompressed bytes those blocks cover. */
  reusedBytes: number;
  /** Uncompressed bytes encoded again with libbzip2. */
  encodedBytes: number;
}

export const foldCrc = (combined: number, blockCrc: number): number =>
  (((combined << 1) | (combined >>> 31)) ^ blockCrc) >>> 0;

/** `n` (≤ 32) bits at bit offset `bit`, most significant first; 0 past the end. */
export function readBits(bytes: Uint8Array, bit: number, n: number): number {
  let v = 0;
  let p = bit >>> 3;
  let s = bit & 7;
  let left = n;
  while (left > 0) {
    const take = Math.min(8 - s, left);
    const byte = bytes[p] ?? 0;
    v = v * 2 ** take + ((byte >>> (8 - s - take)) & ((1 << take) - 1));
    left -= take;
    s = 0;
    p++;
  }
  return v;
}

/** Big-endian bit writer with a fast path for copying long bit ranges. */
export class BitWriter {
  private buf: Uint8Array;
  private pos = 0;

  constructor(capacityBytes: number) {
    this.buf = new Uint8Array(Math.max(16, capacityBytes));
  }

  get bitLength(): number {
    return this.pos;
  }

  private ensure(bits: number): void {
    const need = ((this.pos + bits + 7) >>> 3) + 8;
    if (need <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(need, this.buf.length * 2));
    grown.set(this.buf.subarray(0, (this.pos + 7) >>> 3));
    this.buf = grown;
  }

  /** Writes the low `n` (≤ 32) bits of `value`, most significant first. */
  bits(value: number, n: number): void {
    this.ensure(n);
    for (let i = n - 1; i >= 0; i--) {
      const bit = Math.floor(value / 2 ** i) & 1;
      if (bit) this.buf[this.pos >>> 3]! |= 0x80 >>> (this.pos & 7);
      this.pos++;
    }
  }

  /** Appends bits [from, to) of `src`. */
  copy(src: Uint8Array, from: number, to: number): void {
    let n = to - from;
    if (n <= 0) return;
    this.ensure(n);
    const out = this.buf;
    while (n > 0 && (this.pos & 7) !== 0) {
      if ((src[from >>> 3]! >>> (7 - (from & 7))) & 1) out[this.pos >>> 3]! |= 0x80 >>> (this.pos & 7);
      this.pos++;
      from++;
      n--;
    }
    const whole = n >>> 3;
    const d = this.pos >>> 3;
    const s = from & 7;
    let p = from >>> 3;
    if (s === 0) out.set(src.subarray(p, p + whole), d);
    else {
      const r = 8 - s;
      for (let i = 0; i < whole; i++, p++) out[d + i] = ((src[p]! << s) | ((src[p + 1] ?? 0) >>> r)) & 0xff;
    }
    this.pos += whole * 8;
    from += whole * 8;
    n -= whole * 8;
    while (n > 0) {
      if ((src[from >>> 3]! >>> (7 - (from & 7))) & 1) out[this.pos >>> 3]! |= 0x80 >>> (this.pos & 7);
      this.pos++;
      from++;
      n--;
    }
  }

  /** The bytes written, the last one padded with zero bits (as bzip2 pads). */
  finish(): Uint8Array {
    return this.buf.slice(0, (this.pos + 7) >>> 3);
  }
}

/**
 * The blocks of a single, complete bzip2 stream, or undefined when the stream cannot be split with
 * certainty: no end-of-stream marker exactly at the end, any other end marker, no block at bit 32, or
 * block CRCs that do not fold to the stored combined CRC (a chance magic match inside Huffman data).
 */
export function scanBz2(bytes: Uint8Array): Bz2Layout | undefined {
  let level: number;
  try {
    level = readBz2Level(bytes);
  } catch {
    return undefined;
  }
  const eosHits = findEosMarkers(bytes);
  if (eosHits.length !== 1) return undefined;
  const eos = eosHits[0]!;
  if (Math.ceil((eos + MAGIC_BITS + CRC_BITS) / 8) !== bytes.length) return undefined;
  const starts = findMagic48(bytes, BLOCK_MAGIC).filter((b) => b + MAGIC_BITS + CRC_BITS <= eos);
  if (starts.length === 0 || starts[0] !== HEADER_BITS) return undefined;
  const blocks: Bz2Block[] = [];
  let combined = 0;
  for (const [i, start] of starts.entries()) {
    const end = starts[i + 1] ?? eos;
    if (end - start < MAGIC_BITS + CRC_BITS) return undefined;
    const crc = readBits(bytes, start + MAGIC_BITS, CRC_BITS);
    combined = foldCrc(combined, crc);
    blocks.push({ start, end, crc });
  }
  const combinedCrc = readBits(bytes, eos + MAGIC_BITS, CRC_BITS);
  if (combined !== combinedCrc) return undefined;
  return { level, blocks, eos, combinedCrc };
}

/** The end-of-stream marker and the combined CRC (the writer pads the last byte with zeros). */
function writeEnd(w: BitWriter, combinedCrc: number): void {
  w.bits(Number(EOS_MAGIC >> 24n), 24);
  w.bits(Number(EOS_MAGIC & 0xffffffn), 24);
  w.bits(combinedCrc, 32);
}

/** A complete one-block stream holding block `b` of `bytes`. */
function singleBlockStream(bytes: Uint8Array, level: number, b: Bz2Block): Uint8Array {
  const w = new BitWriter(((b.end - b.start) >>> 3) + 32);
  w.bits(0x425a6830 + level, 32);
  w.copy(bytes, b.start, b.end);
  writeEnd(w, b.crc);
  return w.finish();
}

/**
 * Decodes a bzip2 entry block by block, recording which output range each block produced.
 * Undefined when the stream cannot be split with certainty or a block does not decode on its own:
 * the caller then decodes the whole stream (bz2.ts), which reports corruption with its typed error.
 * Decoding is streaming at block granularity: it stops as soon as the running total passes
 * `ctx.limit` (ctx.exceeded: size or ratio cap), so a bomb costs at most the limit plus one block's
 * buffer growth; the prefix check runs after the first block(s), before the rest is decoded; and the
 * event loop runs between blocks (a signal handler is not held up by a long entry).
 */
export async function decodeBz2Blocks(
  bytes: Uint8Array,
  ctx: DecodeContext,
): Promise<Bz2Decoded | undefined> {
  const layout = scanBz2(bytes);
  if (!layout) return undefined;
  // Each block decodes as its own stream (~12 µs of set-up each): a stream of many tiny blocks (only a
  // crafted one has them) is left to the whole-stream decoder, which pays that set-up once.
  if (layout.blocks.length > Math.max(MAX_BLOCKS_ANY_SIZE, bytes.length / MIN_AVERAGE_BLOCK_BYTES))
    return undefined;
  const cap = ctx.limit;
  const m = await loadDecoder();
  const parts: Uint8Array[] = [];
  const ends: number[] = [];
  let total = 0;
  // A block holds at most level×100 kB after bzip2's first run-length stage; runs of 4-255 equal bytes
  // expand (up to 51×), so start at 4× that and grow; later blocks start where the last one ended up.
  let guess = layout.level * 400_000;
  try {
    for (const [i, b] of layout.blocks.entries()) {
      if (i > 0) await yieldToLoop();
      const stream = singleBlockStream(bytes, layout.level, b);
      let size = Math.min(cap - total + 1, guess);
      for (;;) {
        const r = wasmDecodeOnce(m, stream, size, ctx.stats);
        if (r.code === 0 && r.out) {
          parts.push(r.out);
          total += r.out.length;
          ends.push(total);
          break;
        }
        if (r.code !== BZ_OUTBUFF_FULL) return undefined;
        if (size > cap - total) throw ctx.exceeded('bz2');
        size = Math.min(cap - total + 1, size * 4);
        guess = Math.max(guess, size);
        if (size > WASM_MAX_OUTPUT) return undefined;
      }
      if (total > cap) throw ctx.exceeded('bz2');
      const last = i === layout.blocks.length - 1;
      if (ctx.prefix.pending) {
        ctx.prefix.offer(parts.length === 1 ? parts[0]! : joinParts(parts, total), last);
      }
      // The last block's end is followed only by the end-of-stream marker and CRC: the stream is consumed.
      ctx.progress(last ? bytes.length : Math.min(bytes.length, Math.ceil(b.end / 8)), bytes.length);
    }
  } finally {
    dropDecoderIfLarge(m);
  }
  return { source: bytes, layout, data: parts.length === 1 ? parts[0]! : joinParts(parts, total), ends };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

interface Piece {
  src: Uint8Array;
  from: number;
  to: number;
  crcs: number[];
}

/**
 * Encodes `data` (a modified copy of `original.data`) as one bzip2 stream with the original level,
 * copying every original block whose uncompressed range is unchanged in `data` and encoding the rest
 * with libbzip2. Undefined when a freshly encoded part cannot be split (never expected; the caller then
 * encodes the whole stream).
 */
export async function encodeBz2Reusing(
  data: Uint8Array,
  original: Bz2Decoded,
  onProgress?: CodecProgress,
): Promise<{ output: Uint8Array; stats: Bz2ReuseStats } | undefined> {
  const { layout, source, ends } = original;
  const pieces: Piece[] = [];
  const stats: Bz2ReuseStats = { reusedBlocks: 0, reusedBytes: 0, encodedBytes: 0 };
  let covered = 0;
  const fresh = async (from: number, to: number): Promise<boolean> => {
    if (to <= from) return true;
    const stream = await encodeBz2(data.subarray(from, to), layout.level);
    const l = scanBz2(stream);
    if (!l) return false;
    pieces.push({ src: stream, from: HEADER_BITS, to: l.eos, crcs: l.blocks.map((b) => b.crc) });
    stats.encodedBytes += to - from;
    onProgress?.(to, data.length);
    return true;
  };
  for (const [i, b] of layout.blocks.entries()) {
    const start = i === 0 ? 0 : ends[i - 1]!;
    const end = ends[i]!;
    if (end > data.length || end === start) continue;
    if (!sameBytes(data.subarray(start, end), original.data.subarray(start, end))) continue;
    if (!(await fresh(covered, start))) return undefined;
    pieces.push({ src: source, from: b.start, to: b.end, crcs: [b.crc] });
    stats.reusedBlocks++;
    stats.reusedBytes += end - start;
    covered = end;
    onProgress?.(end, data.length);
  }
  if (!(await fresh(covered, data.length))) return undefined;

  const bits = pieces.reduce((n, p) => n + p.to - p.from, 0);
  const w = new BitWriter(((bits + HEADER_BITS + MAGIC_BITS + CRC_BITS) >>> 3) + 8);
  w.bits(0x425a6830 + layout.level, 32);
  let combined = 0;
  for (const p of pieces) {
    w.copy(p.src, p.from, p.to);
    for (const c of p.crcs) combined = foldCrc(combined, c);
  }
  writeEnd(w, combined);
  const output = w.finish();
  // Structural self-check of the seams: the blocks must be where they were written.
  const check = scanBz2(output);
  const expected = pieces.reduce((n, p) => n + p.crcs.length, 0);
  if (!check || check.blocks.length !== expected || check.combinedCrc !== combined) return undefined;
  return { output, stats };
}
