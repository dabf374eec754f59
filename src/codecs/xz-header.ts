/**
 * Pure parsing of the .xz container (xz file format spec 1.1.0, tukaani.org/xz/xz-file-format.txt):
 * stream header (§2.1.1), block headers (§3.1), index (§4) and stream footer (§2.1.2). No decoding.
 *
 * Used to read the settings to reproduce on recompression (dictionary size, x86 BCJ, check type) and,
 * before any decoding, to refuse streams the product must not decode: unsupported filters, a dictionary
 * over the Firefox updater's 64 MiB limit, more than one stream, trailing bytes, or a declared
 * uncompressed size over the caller's cap.
 */
import { crc32 } from 'node:zlib';
import { codecError, type CodecErrorCode } from './errors.js';
import { Cursor } from '../formats/cursor.js';
import type { XzCheck } from './types.js';

export const XZ_MAGIC = Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00);
const FOOTER_MAGIC_0 = 0x59; // 'Y'
const FOOTER_MAGIC_1 = 0x5a; // 'Z'
const STREAM_HEADER_SIZE = 12;
const STREAM_FOOTER_SIZE = 12;

/** Firefox's updater: `xz_dec_init(XZ_DYNALLOC, 64 * 1024 * 1024)` (archivereader.cpp). */
export const XZ_MAX_DICT_SIZE = 64 * 1024 * 1024;
/** Spec §1.2: a VLI is at most 9 bytes. */
const VLI_MAX_BYTES = 9;
/** More blocks than this in one MAR entry is hostile (xz -T makes one block per 3×dict = 24+ MiB). */
export const XZ_MAX_BLOCKS = 65536;

export const XZ_FILTER_X86 = 0x04;
export const XZ_FILTER_LZMA2 = 0x21;

const CHECKS: Record<number, XzCheck> = { 0x00: 'none', 0x01: 'crc32', 0x04: 'crc64', 0x0a: 'sha256' };
export const XZ_CHECK_IDS: Record<XzCheck, number> = { none: 0x00, crc32: 0x01, crc64: 0x04, sha256: 0x0a };
/** Size of the check field per check ID (spec §3.4). */
const CHECK_SIZES = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64];

export interface XzBlockHeader {
  /** Size of the block header in bytes (4..1024). */
  headerSize: number;
  compressedSize: number | undefined;
  uncompressedSize: number | undefined;
  x86: boolean;
  dictSize: number;
}

export interface XzStreamInfo {
  check: XzCheck;
  /** Block headers, in order, each with its absolute offset. */
  blocks: (XzBlockHeader & { offset: number; unpaddedSize: number; uncompressedSize: number })[];
  /** Sum of the index's uncompressed sizes (what liblzma will verify). */
  uncompressedSize: number;
  /** Size of the whole stream in bytes (== input length when there are no trailing bytes). */
  streamSize: number;
}

function fail(code: Exclude<CodecErrorCode, 'POLICY_NOT_PE'>, message: string, offset?: number): never {
  throw codecError('xz', code, message, offset);
}

function corrupt(message: string, offset?: number): never {
  fail('CODEC_CORRUPT', message, offset);
}

function cursor(bytes: Uint8Array): Cursor {
  return new Cursor(bytes, 'xz', 0, 'CODEC_CORRUPT');
}

function checkCrc32(bytes: Uint8Array, start: number, end: number, stored: number, what: string): void {
  const actual = crc32(bytes.subarray(start, end)) >>> 0;
  if (actual !== stored) {
    corrupt(`${what} CRC32 is 0x${stored.toString(16)}, computed 0x${actual.toString(16)}`, start);
  }
}

/** Reads a multibyte integer (spec §1.2); rejects non-minimal encodings and values above 2^53. */
export function readVli(c: Cursor): number {
  const start = c.fileOffset;
  let value = 0;
  for (let i = 0; i < VLI_MAX_BYTES; i++) {
    const b = c.u8();
    value += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) {
      if (b === 0 && i > 0) corrupt('non-minimal multibyte integer', start);
      if (!Number.isSafeInteger(value))
        fail('CODEC_UNSUPPORTED', `multibyte integer ${value} too large`, start);
      return value;
    }
  }
  corrupt('multibyte integer longer than 9 bytes', start);
}

/** Decodes the LZMA2 dictionary-size property byte (spec §5.3.1). */
export function lzma2DictSize(prop: number, offset?: number): number {
  if ((prop & 0xc0) !== 0 || prop > 40) corrupt(`LZMA2 dictionary size byte ${prop} is invalid`, offset);
  if (prop === 40) return 0xffffffff;
  return (2 | (prop & 1)) * 2 ** (Math.floor(prop / 2) + 11);
}

/** The property byte for a dictionary size that is exactly representable, or undefined. */
export function lzma2DictProp(dictSize: number): number | undefined {
  for (let p = 0; p < 40; p++) if (lzma2DictSize(p) === dictSize) return p;
  return undefined;
}

/** Stream header (spec §2.1.1): magic, flags, CRC32. Returns the check type. */
export function parseStreamHeader(bytes: Uint8Array): XzCheck {
  const c = cursor(bytes);
  const magic = c.bytesView(6);
  for (let i = 0; i < 6; i++) {
    if (magic[i] !== XZ_MAGIC[i]) corrupt('not an xz stream (bad header magic)', 0);
  }
  const flags = c.bytesView(2);
  checkCrc32(bytes, 6, 8, c.u32le(), 'stream header');
  return streamFlagsCheck(flags, 6);
}

function streamFlagsCheck(flags: Uint8Array, offset: number): XzCheck {
  if (flags[0] !== 0 || (flags[1]! & 0xf0) !== 0) {
    fail('CODEC_UNSUPPORTED', `reserved stream flags set: ${flags[0]}, ${flags[1]}`, offset);
  }
  const id = flags[1]! & 0x0f;
  const check = CHECKS[id];
  if (check === undefined) fail('CODEC_UNSUPPORTED', `unsupported xz check type ${id}`, offset + 1);
  return check;
}

/**
 * Block header (spec §3.1) at `offset`: the filter chain must be LZMA2, optionally preceded by x86 BCJ
 * with a zero start offset — what xz `--x86 --lzma2` and mardor write; anything else is
 * `CODEC_UNSUPPORTED` since the encoder could not reproduce it.
 */
export function parseBlockHeader(bytes: Uint8Array, offset: number): XzBlockHeader {
  const c = cursor(bytes).seek(offset);
  const sizeByte = c.u8();
  if (sizeByte === 0) corrupt('index found where a block header was expected', offset);
  const headerSize = (sizeByte + 1) * 4;
  const end = offset + headerSize;
  if (end > bytes.length) corrupt(`block header of ${headerSize} bytes runs past the end`, offset);
  const hc = cursor(bytes.subarray(0, end - 4)).seek(offset + 1);
  const flags = hc.u8();
  if ((flags & 0x3c) !== 0)
    fail('CODEC_UNSUPPORTED', `reserved block flags 0x${flags.toString(16)}`, offset + 1);
  const compressedSize = flags & 0x40 ? readVli(hc) : undefined;
  const uncompressedSize = flags & 0x80 ? readVli(hc) : undefined;
  const nFilters = (flags & 0x03) + 1;
  const ids: number[] = [];
  let dictSize = -1;
  let x86 = false;
  for (let i = 0; i < nFilters; i++) {
    const at = hc.fileOffset;
    const id = readVli(hc);
    const propsSize = readVli(hc);
    const props = hc.bytesView(propsSize);
    ids.push(id);
    const last = i === nFilters - 1;
    if (id === XZ_FILTER_LZMA2 && last) {
      if (propsSize !== 1) corrupt(`LZMA2 properties are ${propsSize} bytes, expected 1`, at);
      dictSize = lzma2DictSize(props[0]!, at);
    } else if (id === XZ_FILTER_X86 && !last && i === 0) {
      // A 4-byte start offset of 0 equals no properties; another start offset could not be reproduced.
      const startOffset =
        propsSize === 4 ? new DataView(props.buffer, props.byteOffset, 4).getUint32(0, true) : 0;
      if ((propsSize !== 0 && propsSize !== 4) || startOffset !== 0) {
        fail('CODEC_UNSUPPORTED', `x86 BCJ filter with start offset properties (${propsSize} bytes)`, at);
      }
      x86 = true;
    } else {
      break;
    }
  }
  if (dictSize < 0) {
    fail(
      'CODEC_UNSUPPORTED',
      `unsupported xz filter chain [${ids.map((i) => '0x' + i.toString(16)).join(', ')}]; only [x86,] lzma2`,
      offset + 2,
    );
  }
  for (let i = hc.offset; i < end - 4; i++) {
    if (bytes[i] !== 0) corrupt('non-zero block header padding', i);
  }
  checkCrc32(bytes, offset, end - 4, c.seek(end - 4).u32le(), 'block header');
  return { headerSize, compressedSize, uncompressedSize, x86, dictSize };
}

interface Footer {
  check: XzCheck;
  indexSize: number;
}

function parseFooter(bytes: Uint8Array, end: number): Footer | undefined {
  if (end < STREAM_HEADER_SIZE + STREAM_FOOTER_SIZE || end % 4 !== 0) return undefined;
  const start = end - STREAM_FOOTER_SIZE;
  if (bytes[end - 2] !== FOOTER_MAGIC_0 || bytes[end - 1] !== FOOTER_MAGIC_1) return undefined;
  const c = cursor(bytes).seek(start);
  const crc = c.u32le();
  const backward = c.u32le();
  const flags = c.bytesView(2);
  if (crc32(bytes.subarray(start + 4, start + 10)) >>> 0 !== crc) return undefined;
  return { check: streamFlagsCheck(flags, start + 8), indexSize: (backward + 1) * 4 };
}

interface IndexRecord {
  unpaddedSize: number;
  uncompressedSize: number;
}

function parseIndex(bytes: Uint8Array, start: number, size: number): IndexRecord[] {
  const end = start + size;
  const c = cursor(bytes.subarray(0, end - 4)).seek(start);
  if (c.u8() !== 0) corrupt('index indicator is not 0', start);
  const count = readVli(c);
  if (count > XZ_MAX_BLOCKS) fail('CODEC_UNSUPPORTED', `xz stream with ${count} blocks`, start + 1);
  const records: IndexRecord[] = [];
  for (let i = 0; i < count; i++) {
    const at = c.fileOffset;
    const unpaddedSize = readVli(c);
    const uncompressedSize = readVli(c);
    if (unpaddedSize < 5) corrupt(`index record unpadded size ${unpaddedSize}`, at);
    records.push({ unpaddedSize, uncompressedSize });
  }
  if (c.remaining > 3) corrupt(`index has ${c.remaining} bytes left after its records`, c.fileOffset);
  for (let i = c.offset; i < end - 4; i++) if (bytes[i] !== 0) corrupt('non-zero index padding', i);
  checkCrc32(
    bytes,
    start,
    end - 4,
    cursor(bytes)
      .seek(end - 4)
      .u32le(),
    'index',
  );
  return records;
}

const pad4 = (n: number): number => n + ((4 - (n % 4)) % 4);

/**
 * Parses one stream that must end exactly at `end`: footer, index, and every block header.
 * Returns undefined when no valid footer ends there.
 */
function parseStreamEndingAt(bytes: Uint8Array, end: number, check: XzCheck): XzStreamInfo | undefined {
  const footer = parseFooter(bytes, end);
  if (!footer) return undefined;
  const indexStart = end - STREAM_FOOTER_SIZE - footer.indexSize;
  if (indexStart < STREAM_HEADER_SIZE) corrupt(`index size ${footer.indexSize} too large`, end - 8);
  if (footer.check !== check) {
    corrupt(`stream footer check ${footer.check} differs from header check ${check}`, end - 4);
  }
  const records = parseIndex(bytes, indexStart, footer.indexSize);
  const blocksSize = records.reduce((n, r) => n + pad4(r.unpaddedSize), 0);
  // Another stream (or padding) before this one: the caller reports trailing data after the first.
  if (indexStart - blocksSize !== STREAM_HEADER_SIZE) return undefined;
  const checkSize = CHECK_SIZES[XZ_CHECK_IDS[check]]!;
  const blocks: XzStreamInfo['blocks'] = [];
  let pos = STREAM_HEADER_SIZE;
  let uncompressed = 0;
  for (const r of records) {
    if (pos + r.unpaddedSize > indexStart) corrupt('blocks overlap the index', pos);
    const h = parseBlockHeader(bytes, pos);
    if (r.unpaddedSize < h.headerSize + checkSize + 1)
      corrupt(`block unpadded size ${r.unpaddedSize} too small`, pos);
    if (h.uncompressedSize !== undefined && h.uncompressedSize !== r.uncompressedSize) {
      corrupt(`block header says ${h.uncompressedSize} bytes, index says ${r.uncompressedSize}`, pos);
    }
    blocks.push({ ...h, offset: pos, unpaddedSize: r.unpaddedSize, uncompressedSize: r.uncompressedSize });
    uncompressed += r.uncompressedSize;
    pos += pad4(r.unpaddedSize);
  }
  if (pos !== indexStart) corrupt(`blocks end at ${pos} but the index starts at ${indexStart}`, pos);
  return { check, blocks, uncompressedSize: uncompressed, streamSize: end };
}

/**
 * Structural validation of a whole xz entry, without decoding: exactly one stream covering all of
 * `bytes`, supported filters in every block, dictionaries within XZ_MAX_DICT_SIZE.
 * Throws CODEC_TRAILING_DATA when a complete stream ends before the last byte.
 */
export function inspectXz(bytes: Uint8Array): XzStreamInfo {
  const check = parseStreamHeader(bytes);
  const info = parseStreamEndingAt(bytes, bytes.length, check);
  if (!info) {
    // No footer at the end: find the first complete stream (footers end 4-byte aligned) to tell
    // "stream + trailing bytes" (e.g. two concatenated streams, or padding) from a truncated stream.
    const yz = Uint8Array.of(FOOTER_MAGIC_0, FOOTER_MAGIC_1);
    for (let i = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).indexOf(yz, 22); i >= 0;) {
      const end = i + 2;
      let found: XzStreamInfo | undefined;
      try {
        found = parseStreamEndingAt(bytes, end, check);
      } catch {
        found = undefined;
      }
      if (found) {
        fail('CODEC_TRAILING_DATA', `${bytes.length - end} bytes after the end of the xz stream`, end);
      }
      i = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).indexOf(yz, i + 1);
    }
    corrupt('no valid xz stream footer (truncated or corrupt stream)', Math.max(0, bytes.length - 12));
  }
  if (info.blocks.length === 0 && info.uncompressedSize !== 0) corrupt('empty index with data', 12);
  for (const b of info.blocks) {
    if (b.dictSize > XZ_MAX_DICT_SIZE) {
      fail(
        'CODEC_UNSUPPORTED',
        `LZMA2 dictionary of ${b.dictSize} bytes exceeds the ${XZ_MAX_DICT_SIZE}-byte limit`,
        b.offset,
      );
    }
  }
  return info;
}

/**
 * Settings from the stream header and the first block header only (cheap; no index walk).
 * An empty stream (no block, e.g. a 32-byte empty file entry) reports the xz defaults for LZMA2:
 * the dictionary of preset 6 (8 MiB) and no BCJ, since nothing records them.
 */
export function readXzSettings(bytes: Uint8Array): { dictSize: number; x86: boolean; check: XzCheck } {
  const check = parseStreamHeader(bytes);
  if (bytes.length > STREAM_HEADER_SIZE && bytes[STREAM_HEADER_SIZE] === 0) {
    return { dictSize: XZ_EMPTY_STREAM_DICT_SIZE, x86: false, check };
  }
  const h = parseBlockHeader(bytes, STREAM_HEADER_SIZE);
  return { dictSize: h.dictSize, x86: h.x86, check };
}

/** Dictionary size reported for a stream with no block (xz's default preset 6). */
export const XZ_EMPTY_STREAM_DICT_SIZE = 8 * 1024 * 1024;
