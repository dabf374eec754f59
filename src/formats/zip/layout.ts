/**
 * The output layout of a rewritten zip, computed without I/O: where each entry lands, the new local
 * header and descriptor of each replaced entry, the central directory and end records, and the file size.
 * ZipWriter (src/zip/writer.ts) streams exactly these bytes; a caller holding every output in memory can
 * assemble the file from this alone (copied spans, then `tail`).
 */
import {
  encodeCentralRecord,
  encodeEnd,
  encodeReplacedLocal,
  type ZipEndTemplate,
  type ZipReplacement,
} from './writer.js';
import { ZIP_MAX_ENTRIES, ZIP_METHOD_STORED, zipError, type ZipEntry } from './types.js';

export interface ZipOutputEntry {
  entry: ZipEntry;
  /** Absent: the entry is copied unchanged, `entry.end - entry.localHeaderOffset` bytes. */
  replacement?: ZipReplacement;
}

export interface ZipPlacedEntry {
  entry: ZipEntry;
  /** Output offset of the local header. */
  offset: number;
  /** Bytes this entry takes in the output (header, data, descriptor). */
  length: number;
  /** Replaced entries only: the new local header and descriptor, around `replacement.compressedSize` bytes of data. */
  localHeader?: Uint8Array;
  descriptor?: Uint8Array;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
}

const isU32 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

/** A replacement must be writable: sizes are safe integers, a stored entry's sizes agree, a directory stays empty. */
export function checkReplacement(entry: ZipEntry, r: ZipReplacement): void {
  const name = JSON.stringify(entry.name);
  if (
    !isU32(r.crc32) ||
    !Number.isSafeInteger(r.compressedSize) ||
    r.compressedSize < 0 ||
    !Number.isSafeInteger(r.uncompressedSize) ||
    r.uncompressedSize < 0
  )
    throw zipError(
      'ZIP_WRITER_STATE',
      `replacement of ${name}: CRC ${r.crc32} and sizes ${r.compressedSize}/${r.uncompressedSize} are not valid`,
    );
  if (entry.method === ZIP_METHOD_STORED && r.compressedSize !== r.uncompressedSize)
    throw zipError(
      'ZIP_STORED_SIZE_MISMATCH',
      `replacement of stored entry ${name} has sizes ${r.compressedSize}/${r.uncompressedSize}`,
    );
  if (entry.isDirectory && r.uncompressedSize !== 0)
    throw zipError('ZIP_BAD_NAME', `directory entry ${name} cannot hold ${r.uncompressedSize} bytes`);
}

/** The entries of one output: each central position and each name once, at most ZIP_MAX_ENTRIES. */
export class OutputEntrySet {
  private readonly indexes = new Set<number>();
  private readonly names = new Set<string>();
  get size(): number {
    return this.indexes.size;
  }
  add(entry: ZipEntry): void {
    if (this.indexes.size >= ZIP_MAX_ENTRIES)
      throw zipError('ZIP_TOO_MANY_ENTRIES', `more than ${ZIP_MAX_ENTRIES} entries`);
    if (this.indexes.has(entry.index))
      throw zipError(
        'ZIP_WRITER_STATE',
        `central position ${entry.index} added twice (${JSON.stringify(entry.name)})`,
      );
    if (this.names.has(entry.name))
      throw zipError('ZIP_DUPLICATE_NAME', `duplicate entry name ${JSON.stringify(entry.name)}`);
    this.indexes.add(entry.index);
    this.names.add(entry.name);
  }
}

/** Place one entry at `offset`. */
export function placeEntry(out: ZipOutputEntry, offset: number): ZipPlacedEntry {
  const { entry, replacement } = out;
  if (!replacement)
    return {
      entry,
      offset,
      length: entry.end - entry.localHeaderOffset,
      crc32: entry.crc32,
      compressedSize: entry.compressedSize,
      uncompressedSize: entry.uncompressedSize,
    };
  checkReplacement(entry, replacement);
  const { header, descriptor } = encodeReplacedLocal(entry, replacement);
  const placed: ZipPlacedEntry = {
    entry,
    offset,
    length: header.length + replacement.compressedSize + (descriptor?.length ?? 0),
    localHeader: header,
    crc32: replacement.crc32,
    compressedSize: replacement.compressedSize,
    uncompressedSize: replacement.uncompressedSize,
  };
  if (descriptor) placed.descriptor = descriptor;
  return placed;
}

/** Central directory (records in the entries' original central order) and end records after the last entry. */
export function encodeTail(
  placed: readonly ZipPlacedEntry[],
  end: ZipEndTemplate,
  centralDirectoryOffset: number,
): { centralDirectorySize: number; tail: Uint8Array } {
  const records = [...placed]
    .sort((a, b) => a.entry.index - b.entry.index)
    .map((p) =>
      encodeCentralRecord(p.entry, {
        localHeaderOffset: p.offset,
        crc32: p.crc32,
        compressedSize: p.compressedSize,
        uncompressedSize: p.uncompressedSize,
      }),
    );
  const centralDirectorySize = records.reduce((n, r) => n + r.length, 0);
  const endBytes = encodeEnd(end, {
    offset: centralDirectoryOffset,
    size: centralDirectorySize,
    entries: placed.length,
  });
  const tail = new Uint8Array(centralDirectorySize + endBytes.length);
  let pos = 0;
  for (const r of records) {
    tail.set(r, pos);
    pos += r.length;
  }
  tail.set(endBytes, pos);
  return { centralDirectorySize, tail };
}

export interface ZipLayout {
  entries: ZipPlacedEntry[];
  centralDirectoryOffset: number;
  centralDirectorySize: number;
  /** Central directory + end records, from `centralDirectoryOffset` to EOF. */
  tail: Uint8Array;
  fileSize: number;
}

/** Every entry's output offset and the final file, for entries written back to back in the given order. */
export function zipLayout(outputs: readonly ZipOutputEntry[], end: ZipEndTemplate): ZipLayout {
  const set = new OutputEntrySet();
  for (const o of outputs) set.add(o.entry);
  const entries: ZipPlacedEntry[] = [];
  let pos = 0;
  for (const o of outputs) {
    const p = placeEntry(o, pos);
    entries.push(p);
    pos += p.length;
  }
  const { centralDirectorySize, tail } = encodeTail(entries, end, pos);
  return { entries, centralDirectoryOffset: pos, centralDirectorySize, tail, fileSize: pos + tail.length };
}
