import { crc32 } from 'node:zlib';
import type { ByteSource } from '../../io/byte-source.js';
import { Cursor } from '../cursor.js';
import { parseExtra, readU64, readZip64Slots, type Zip64Slot } from './extra.js';
import { assertSafeZipName, decodeZipName } from './names.js';
import {
  ZIP64_EOCD_LOCATOR_SIZE,
  ZIP64_EOCD_SIZE,
  ZIP64_MAX_EOCD_SIZE,
  ZIP_CENTRAL_HEADER_SIZE,
  ZIP_EOCD_SEARCH,
  ZIP_EOCD_SIZE,
  ZIP_EXTRA_UNICODE_PATH,
  ZIP_EXTRA_ZIP64,
  ZIP_FLAG_CD_ENCRYPTED,
  ZIP_FLAG_DESCRIPTOR,
  ZIP_FLAG_ENCRYPTED,
  ZIP_FLAG_STRONG_ENCRYPTION,
  ZIP_FLAG_UTF8,
  ZIP_FORMAT,
  ZIP_LOCAL_HEADER_SIZE,
  ZIP_MAX_CENTRAL_DIRECTORY_SIZE,
  ZIP_MAX_ENTRIES,
  ZIP_MAX_ENTRY_SIZE,
  ZIP_MAX_FILE_SIZE,
  ZIP_MAX_RATIO,
  ZIP_METHOD_DEFLATE,
  ZIP_METHOD_STORED,
  ZIP_RATIO_MIN_SIZE,
  ZIP_SIG_CENTRAL,
  ZIP_SIG_DESCRIPTOR,
  ZIP_SIG_EOCD,
  ZIP_SIG_LOCAL,
  ZIP_SIG_ZIP64_EOCD,
  ZIP_SIG_ZIP64_LOCATOR,
  ZIP_U16_SENTINEL,
  ZIP_U32_SENTINEL,
  zipError,
  type ReadZipOptions,
  type ZipDataDescriptor,
  type ZipEntry,
  type ZipEocd,
  type ZipErrorCode,
  type ZipInfo,
  type ZipLocalHeader,
  type ZipZip64End,
  type ZipZip64Fields,
} from './types.js';

/** Bytes at [offset, offset+length), or a typed error if that range is outside `limit` (the file by default). */
function checkRange(offset: number, length: number, limit: number, code: ZipErrorCode, what: string): void {
  if (offset < 0 || length < 0 || offset + length > limit)
    throw zipError(code, `${what} [${offset}, +${length}) is outside [0, ${limit})`, offset);
}

async function readRange(
  source: ByteSource,
  offset: number,
  length: number,
  code: ZipErrorCode,
  what: string,
): Promise<Uint8Array> {
  checkRange(offset, length, source.size, code, what);
  return source.read(offset, length);
}

/** How far one read of local headers may reach (bytes). */
const WINDOW = 64 * 1024;
/** Bytes read beyond a local header's name for its extra field, before the next header is needed. */
const LOCAL_EXTRA_GUESS = 64;

/**
 * Small positioned reads (local headers, descriptors) served from one window of the file; a read outside
 * the window loads a new one of `ahead` bytes (never past `limit`). Callers bounds-check first.
 */
class ReadWindow {
  private base = 0;
  private bytes: Uint8Array = new Uint8Array(0);
  constructor(
    private readonly source: ByteSource,
    private readonly limit: number,
  ) {}

  async read(offset: number, length: number, ahead = 0): Promise<Uint8Array> {
    if (offset >= this.base && offset + length <= this.base + this.bytes.length)
      return this.bytes.subarray(offset - this.base, offset - this.base + length);
    const n = Math.max(length, Math.min(ahead, this.limit - offset));
    this.bytes = await this.source.read(offset, n);
    this.base = offset;
    return this.bytes.subarray(0, length);
  }
}

/**
 * For each entry in file order, the read size at its local header: up to the end of the last local header
 * (name + a guess at its extra field) that ends within WINDOW bytes, so the headers of small entries come
 * in one read. Two pointers: O(entries).
 */
function windowReaches(sorted: readonly ZipEntry[]): number[] {
  const headerEnd = (e: ZipEntry): number =>
    e.localHeaderOffset + ZIP_LOCAL_HEADER_SIZE + e.nameBytes.length + LOCAL_EXTRA_GUESS;
  const out: number[] = [];
  let j = 0;
  for (let i = 0; i < sorted.length; i++) {
    const start = sorted[i]!.localHeaderOffset;
    j = Math.max(j, i);
    while (j + 1 < sorted.length && headerEnd(sorted[j + 1]!) - start <= WINDOW) j++;
    out.push(headerEnd(sorted[j]!) - start);
  }
  return out;
}

const hex = (n: number, w = 8): string => `0x${n.toString(16).padStart(w, '0')}`;

/**
 * Parse and validate a zip (APPNOTE §4.3): EOCD (searched in the last 65557 bytes), zip64 locator and
 * record, the central directory, then each entry's local header and data descriptor checked against its
 * central record. Strict: the entries, central directory and end records must tile the file exactly
 * (no prefix, gaps, overlaps or trailing bytes). Reads the metadata only; entry data is read on demand.
 */
export async function readZip(source: ByteSource, options: ReadZipOptions = {}): Promise<ZipInfo> {
  const size = source.size;
  if (size > ZIP_MAX_FILE_SIZE)
    throw zipError('ZIP_TOO_LARGE', `file is ${size} bytes, more than the ${ZIP_MAX_FILE_SIZE}-byte limit`);
  if (size < ZIP_EOCD_SIZE) throw zipError('ZIP_TRUNCATED', `file is only ${size} bytes`, 0);

  const { eocd, comment } = await findEocd(source);
  const zip64 = await readZip64End(source, eocd);
  const cd = resolveCentralDirectory(eocd, zip64);
  const endOfCd = zip64 ? zip64.offset : eocd.offset;

  if (cd.totalEntries > ZIP_MAX_ENTRIES)
    throw zipError(
      'ZIP_TOO_MANY_ENTRIES',
      `${cd.totalEntries} entries, more than ${ZIP_MAX_ENTRIES}`,
      eocd.offset,
    );
  if (cd.size > ZIP_MAX_CENTRAL_DIRECTORY_SIZE)
    throw zipError(
      'ZIP_CENTRAL_DIRECTORY_TOO_LARGE',
      `central directory of ${cd.size} bytes exceeds ${ZIP_MAX_CENTRAL_DIRECTORY_SIZE}`,
      eocd.offset,
    );
  if (cd.offset + cd.size > endOfCd)
    throw zipError(
      'ZIP_CENTRAL_DIRECTORY_OUT_OF_BOUNDS',
      `central directory [${cd.offset}, +${cd.size}) runs past the end record at ${endOfCd}`,
      cd.offset,
    );
  if (cd.offset + cd.size < endOfCd)
    throw zipError(
      'ZIP_UNREFERENCED_BYTES',
      `${endOfCd - cd.offset - cd.size} bytes between the central directory and the end record`,
      cd.offset + cd.size,
    );
  if (cd.totalEntries * ZIP_CENTRAL_HEADER_SIZE > cd.size)
    throw zipError(
      'ZIP_CENTRAL_DIRECTORY_INVALID',
      `${cd.totalEntries} entries cannot fit in a ${cd.size}-byte central directory`,
      cd.offset,
    );

  const cdBytes = await source.read(cd.offset, cd.size);
  const entries = parseCentralDirectory(cdBytes, cd.offset, cd.totalEntries, options);
  // Local headers in file order through one read window, so a zip of many small entries costs a read
  // per 64 KiB rather than two per entry.
  const sorted = [...entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset || a.index - b.index);
  const window = new ReadWindow(source, cd.offset);
  const reaches = windowReaches(sorted);
  for (const [i, e] of sorted.entries()) await readLocalHeader(window, e, cd.offset, reaches[i]!);
  await checkLayout(window, sorted, cd.offset);

  const info: ZipInfo = {
    fileSize: size,
    entries,
    centralDirectoryOffset: cd.offset,
    centralDirectorySize: cd.size,
    eocd,
    comment,
  };
  if (zip64) info.zip64 = zip64;
  return info;
}

/**
 * §4.3.16. The record is the one whose comment ends exactly at EOF; searching backwards as every reader
 * does. A second record that also ends at EOF (one hidden in the other's comment) is ambiguous: readers
 * that search forwards would see another archive.
 */
async function findEocd(source: ByteSource): Promise<{ eocd: ZipEocd; comment: Uint8Array }> {
  const size = source.size;
  const tailStart = Math.max(0, size - ZIP_EOCD_SEARCH);
  const tail = await source.read(tailStart, size - tailStart);
  const dv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let found: number | undefined;
  let nearMiss: { at: number; end: number } | undefined;
  for (let i = tail.length - ZIP_EOCD_SIZE; i >= 0; i--) {
    if (dv.getUint32(i, true) !== ZIP_SIG_EOCD) continue;
    const end = i + ZIP_EOCD_SIZE + dv.getUint16(i + 20, true);
    if (end !== tail.length) {
      nearMiss ??= { at: tailStart + i, end: tailStart + end };
      continue;
    }
    if (found !== undefined)
      throw zipError(
        'ZIP_AMBIGUOUS_EOCD',
        `two end-of-central-directory records end at EOF (at ${tailStart + i} and ${tailStart + found})`,
        tailStart + i,
      );
    found = i;
  }
  if (found === undefined) {
    if (!nearMiss) throw zipError('ZIP_NO_EOCD', 'no end-of-central-directory record: not a zip file', size);
    if (nearMiss.end < size)
      throw zipError(
        'ZIP_TRAILING_BYTES',
        `${size - nearMiss.end} bytes follow the end record`,
        nearMiss.end,
      );
    throw zipError(
      'ZIP_TRUNCATED',
      `the end record's comment runs ${nearMiss.end - size} bytes past EOF`,
      nearMiss.at,
    );
  }
  const offset = tailStart + found;
  const c = new Cursor(tail.subarray(found), ZIP_FORMAT, offset, 'ZIP_TRUNCATED');
  c.skip(4);
  const eocd: ZipEocd = {
    offset,
    diskNumber: c.u16le(), // 0x04
    centralDirectoryDisk: c.u16le(), // 0x06
    entriesOnDisk: c.u16le(), // 0x08
    totalEntries: c.u16le(), // 0x0a
    centralDirectorySize: c.u32le(), // 0x0c
    centralDirectoryOffset: c.u32le(), // 0x10
  };
  const commentLength = c.u16le(); // 0x14
  return { eocd, comment: c.bytesView(commentLength) };
}

/** §4.3.14-15: the zip64 locator right before the EOCD, and the record it points to. */
async function readZip64End(source: ByteSource, eocd: ZipEocd): Promise<ZipZip64End | undefined> {
  const locatorOffset = eocd.offset - ZIP64_EOCD_LOCATOR_SIZE;
  if (locatorOffset < 0) return undefined;
  const loc = new Cursor(
    await source.read(locatorOffset, ZIP64_EOCD_LOCATOR_SIZE),
    ZIP_FORMAT,
    locatorOffset,
  );
  if (loc.u32le() !== ZIP_SIG_ZIP64_LOCATOR) return undefined;
  const locatorDisk = loc.u32le();
  const offset = readU64(loc);
  const locatorTotalDisks = loc.u32le();
  // Info-ZIP and Python write 1; a few writers 0.
  if (locatorDisk !== 0 || locatorTotalDisks > 1)
    throw zipError(
      'ZIP_MULTI_DISK',
      `zip64 locator names disk ${locatorDisk} of ${locatorTotalDisks}: multi-disk archives are not supported`,
      locatorOffset,
    );
  if (offset + ZIP64_EOCD_SIZE > locatorOffset)
    throw zipError(
      'ZIP_ZIP64_INVALID',
      `zip64 end record at ${offset} does not end before its locator at ${locatorOffset}`,
      locatorOffset + 8,
    );
  const c = new Cursor(await source.read(offset, ZIP64_EOCD_SIZE), ZIP_FORMAT, offset, 'ZIP_ZIP64_INVALID');
  const sig = c.u32le();
  if (sig !== ZIP_SIG_ZIP64_EOCD)
    throw zipError('ZIP_ZIP64_INVALID', `bad zip64 end record signature ${hex(sig)}`, offset);
  const recordSize = readU64(c); // 0x04: size of the rest of the record
  if (recordSize < ZIP64_EOCD_SIZE - 12 || recordSize > ZIP64_MAX_EOCD_SIZE)
    throw zipError('ZIP_ZIP64_INVALID', `zip64 end record size field is ${recordSize}`, offset + 4);
  if (offset + 12 + recordSize !== locatorOffset)
    throw zipError(
      'ZIP_ZIP64_INVALID',
      `zip64 end record [${offset}, +${12 + recordSize}) does not end at its locator (${locatorOffset})`,
      offset + 4,
    );
  const end: ZipZip64End = {
    offset,
    recordSize,
    versionMadeBy: c.u16le(), // 0x0c
    versionNeeded: c.u16le(), // 0x0e
    diskNumber: c.u32le(), // 0x10
    centralDirectoryDisk: c.u32le(), // 0x14
    entriesOnDisk: readU64(c), // 0x18
    totalEntries: readU64(c), // 0x20
    centralDirectorySize: readU64(c), // 0x28
    centralDirectoryOffset: readU64(c), // 0x30
    extensible: await source.read(offset + ZIP64_EOCD_SIZE, recordSize + 12 - ZIP64_EOCD_SIZE),
    locatorOffset,
    locatorDisk,
    locatorTotalDisks,
  };
  return end;
}

/** The central directory's position and count, from the EOCD or (where it says so) the zip64 record. */
function resolveCentralDirectory(
  eocd: ZipEocd,
  zip64: ZipZip64End | undefined,
): { offset: number; size: number; totalEntries: number } {
  if (!zip64) {
    if (eocd.diskNumber !== 0 || eocd.centralDirectoryDisk !== 0 || eocd.entriesOnDisk !== eocd.totalEntries)
      throw zipError(
        'ZIP_MULTI_DISK',
        `end record names disk ${eocd.diskNumber} (central directory on ${eocd.centralDirectoryDisk}, ${eocd.entriesOnDisk} of ${eocd.totalEntries} entries): multi-disk archives are not supported`,
        eocd.offset + 4,
      );
    return {
      offset: eocd.centralDirectoryOffset,
      size: eocd.centralDirectorySize,
      totalEntries: eocd.totalEntries,
    };
  }
  if (
    zip64.diskNumber !== 0 ||
    zip64.centralDirectoryDisk !== 0 ||
    zip64.entriesOnDisk !== zip64.totalEntries
  )
    throw zipError(
      'ZIP_MULTI_DISK',
      `zip64 end record names disk ${zip64.diskNumber} (${zip64.entriesOnDisk} of ${zip64.totalEntries} entries): multi-disk archives are not supported`,
      zip64.offset + 16,
    );
  // Each EOCD field holds the sentinel or the same value as the zip64 record (else two readers differ).
  const pairs: [string, number, number, number][] = [
    ['disk number', eocd.diskNumber, 0, ZIP_U16_SENTINEL],
    ['central directory disk', eocd.centralDirectoryDisk, 0, ZIP_U16_SENTINEL],
    ['entries on disk', eocd.entriesOnDisk, zip64.entriesOnDisk, ZIP_U16_SENTINEL],
    ['total entries', eocd.totalEntries, zip64.totalEntries, ZIP_U16_SENTINEL],
    ['central directory size', eocd.centralDirectorySize, zip64.centralDirectorySize, ZIP_U32_SENTINEL],
    ['central directory offset', eocd.centralDirectoryOffset, zip64.centralDirectoryOffset, ZIP_U32_SENTINEL],
  ];
  for (const [what, raw, real, sentinel] of pairs) {
    if (raw !== sentinel && raw !== real)
      throw zipError(
        'ZIP_ZIP64_INVALID',
        `end record ${what} is ${raw}, the zip64 end record says ${real}`,
        eocd.offset,
      );
  }
  return {
    offset: zip64.centralDirectoryOffset,
    size: zip64.centralDirectorySize,
    totalEntries: zip64.totalEntries,
  };
}

function parseCentralDirectory(
  bytes: Uint8Array,
  base: number,
  count: number,
  options: ReadZipOptions,
): ZipEntry[] {
  const maxEntrySize = options.maxEntrySize ?? ZIP_MAX_ENTRY_SIZE;
  const maxRatio = options.maxRatio ?? ZIP_MAX_RATIO;
  const c = new Cursor(bytes, ZIP_FORMAT, base, 'ZIP_CENTRAL_DIRECTORY_INVALID');
  const entries: ZipEntry[] = [];
  const seen = new Set<string>();
  for (let index = 0; index < count; index++) {
    const at = c.fileOffset;
    const sig = c.u32le();
    if (sig !== ZIP_SIG_CENTRAL)
      throw zipError(
        'ZIP_CENTRAL_DIRECTORY_INVALID',
        `central record ${index} has signature ${hex(sig)}, expected ${hex(ZIP_SIG_CENTRAL)}`,
        at,
      );
    const versionMadeBy = c.u16le(); // 0x04
    const versionNeeded = c.u16le(); // 0x06
    const flags = c.u16le(); // 0x08
    const method = c.u16le(); // 0x0a
    const dosTime = c.u16le(); // 0x0c
    const dosDate = c.u16le(); // 0x0e
    const crc = c.u32le(); // 0x10
    const rawCompressed = c.u32le(); // 0x14
    const rawUncompressed = c.u32le(); // 0x18
    const nameLength = c.u16le(); // 0x1c
    const extraLength = c.u16le(); // 0x1e
    const commentLength = c.u16le(); // 0x20
    const rawDisk = c.u16le(); // 0x22
    const internalAttributes = c.u16le(); // 0x24
    const externalAttributes = c.u32le(); // 0x26
    const rawOffset = c.u32le(); // 0x2a
    const nameAt = c.fileOffset;
    const nameBytes = c.bytesView(nameLength);
    const extraAt = c.fileOffset;
    const extra = c.bytesView(extraLength);
    const comment = c.bytesView(commentLength);

    const records = parseExtra(extra, extraAt, `central record ${index}`);
    const zip64Records = records.filter((r) => r.id === ZIP_EXTRA_ZIP64);
    if (zip64Records.length > 1 || records.filter((r) => r.id === ZIP_EXTRA_UNICODE_PATH).length > 1)
      throw zipError(
        'ZIP_EXTRA_FIELD_INVALID',
        `central record ${index} repeats a zip64 or Unicode-path extra record`,
        extraAt,
      );
    const zip64: ZipZip64Fields = {
      uncompressedSize: rawUncompressed === ZIP_U32_SENTINEL,
      compressedSize: rawCompressed === ZIP_U32_SENTINEL,
      localHeaderOffset: rawOffset === ZIP_U32_SENTINEL,
      diskStart: rawDisk === ZIP_U16_SENTINEL,
    };
    const slots = (Object.keys(zip64) as Zip64Slot[]).filter((k) => zip64[k]);
    let values: Partial<Record<Zip64Slot, number>> = {};
    if (slots.length > 0) {
      if (!zip64Records[0])
        throw zipError(
          'ZIP_ZIP64_INVALID',
          `central record ${index} has zip64 sentinels but no zip64 extra field`,
          at,
        );
      values = readZip64Slots(zip64Records[0].data, slots, extraAt, `central record ${index}`);
    }
    const compressedSize = values.compressedSize ?? rawCompressed;
    const uncompressedSize = values.uncompressedSize ?? rawUncompressed;
    const localHeaderOffset = values.localHeaderOffset ?? rawOffset;
    const diskStart = values.diskStart ?? rawDisk;
    if (diskStart !== 0)
      throw zipError('ZIP_MULTI_DISK', `central record ${index} starts on disk ${diskStart}`, at + 0x22);

    if (flags & (ZIP_FLAG_ENCRYPTED | ZIP_FLAG_STRONG_ENCRYPTION | ZIP_FLAG_CD_ENCRYPTED) || method === 99)
      throw zipError(
        'ZIP_ENCRYPTED',
        `central record ${index} is encrypted (flags ${hex(flags, 4)}, method ${method})`,
        at + 8,
      );
    if (method !== ZIP_METHOD_STORED && method !== ZIP_METHOD_DEFLATE)
      throw zipError(
        'ZIP_UNSUPPORTED_METHOD',
        `central record ${index} uses compression method ${method} (only 0 stored and 8 deflate are supported)`,
        at + 0x0a,
      );

    const headerName = decodeZipName(nameBytes, flags, nameAt, options.allowUnsafeNames);
    let name = headerName;
    const upath = records.find((r) => r.id === ZIP_EXTRA_UNICODE_PATH);
    // Info-ZIP Unicode Path (§4.6.9): readers (unzip, 7-Zip, yauzl) extract under this name when its CRC
    // matches the header name, so it is the name that must be safe.
    if (upath && upath.data.length >= 5 && upath.data[0] === 1) {
      const dv = new DataView(upath.data.buffer, upath.data.byteOffset, upath.data.byteLength);
      if (dv.getUint32(1, true) === crc32(nameBytes))
        name = decodeZipName(upath.data.subarray(5), ZIP_FLAG_UTF8, extraAt, options.allowUnsafeNames);
    }
    if (!options.allowUnsafeNames) {
      assertSafeZipName(headerName, nameAt);
      if (name !== headerName) assertSafeZipName(name, extraAt);
    }
    if (seen.has(name))
      throw zipError('ZIP_DUPLICATE_NAME', `duplicate entry name ${JSON.stringify(name)}`, nameAt);
    seen.add(name);
    const isDirectory = name.endsWith('/');
    if (isDirectory && uncompressedSize !== 0)
      throw zipError(
        'ZIP_BAD_NAME',
        `directory entry ${JSON.stringify(name)} has ${uncompressedSize} bytes of data`,
        at,
      );

    if (method === ZIP_METHOD_STORED && compressedSize !== uncompressedSize)
      throw zipError(
        'ZIP_STORED_SIZE_MISMATCH',
        `stored entry ${JSON.stringify(name)} has compressed size ${compressedSize} and uncompressed size ${uncompressedSize}`,
        at + 0x14,
      );
    if (uncompressedSize > maxEntrySize)
      throw zipError(
        'ZIP_ENTRY_TOO_LARGE',
        `entry ${JSON.stringify(name)} declares ${uncompressedSize} uncompressed bytes, more than ${maxEntrySize}`,
        at + 0x18,
      );
    if (uncompressedSize > ZIP_RATIO_MIN_SIZE && uncompressedSize > maxRatio * compressedSize)
      throw zipError(
        'ZIP_RATIO_TOO_HIGH',
        `entry ${JSON.stringify(name)} declares ${uncompressedSize} bytes from ${compressedSize} (more than ${maxRatio}:1)`,
        at + 0x14,
      );

    entries.push({
      index,
      name,
      nameBytes,
      utf8: (flags & ZIP_FLAG_UTF8) !== 0,
      isDirectory,
      centralOffset: at,
      versionMadeBy,
      versionNeeded,
      flags,
      method,
      dosTime,
      dosDate,
      crc32: crc,
      compressedSize,
      uncompressedSize,
      diskStart,
      internalAttributes,
      externalAttributes,
      localHeaderOffset,
      extra,
      comment,
      zip64,
      // Filled in by readLocalHeader / checkLayout.
      local: undefined as unknown as ZipLocalHeader,
      dataOffset: 0,
      end: 0,
    });
  }
  if (c.remaining !== 0)
    throw zipError(
      'ZIP_CENTRAL_DIRECTORY_INVALID',
      `${c.remaining} bytes of the central directory follow its ${count} records`,
      c.fileOffset,
    );
  return entries;
}

/** §4.3.7, checked against the central record: same name, flags and method; CRC and sizes agree. */
async function readLocalHeader(
  window: ReadWindow,
  e: ZipEntry,
  cdOffset: number,
  ahead: number,
): Promise<void> {
  const at = e.localHeaderOffset;
  const what = `local header of ${JSON.stringify(e.name)}`;
  checkRange(at, ZIP_LOCAL_HEADER_SIZE, cdOffset, 'ZIP_LOCAL_HEADER_OUT_OF_BOUNDS', what);
  const head = await window.read(at, ZIP_LOCAL_HEADER_SIZE, ahead);
  const c = new Cursor(head, ZIP_FORMAT, at, 'ZIP_LOCAL_HEADER_INVALID');
  const sig = c.u32le();
  if (sig !== ZIP_SIG_LOCAL)
    throw zipError(
      'ZIP_LOCAL_HEADER_INVALID',
      `${what} has signature ${hex(sig)}, expected ${hex(ZIP_SIG_LOCAL)}`,
      at,
    );
  const versionNeeded = c.u16le(); // 0x04
  const flags = c.u16le(); // 0x06
  const method = c.u16le(); // 0x08
  const dosTime = c.u16le(); // 0x0a
  const dosDate = c.u16le(); // 0x0c
  const crc = c.u32le(); // 0x0e
  const compressedSize = c.u32le(); // 0x12
  const uncompressedSize = c.u32le(); // 0x16
  const nameLength = c.u16le(); // 0x1a
  const extraLength = c.u16le(); // 0x1c
  checkRange(
    at + ZIP_LOCAL_HEADER_SIZE,
    nameLength + extraLength,
    cdOffset,
    'ZIP_LOCAL_HEADER_OUT_OF_BOUNDS',
    `name and extra field of the ${what}`,
  );
  const rest = await window.read(
    at + ZIP_LOCAL_HEADER_SIZE,
    nameLength + extraLength,
    ahead - ZIP_LOCAL_HEADER_SIZE,
  );
  const name = rest.subarray(0, nameLength);
  const extra = rest.subarray(nameLength);
  const mismatch = (field: string, local: string | number, central: string | number, off: number): never => {
    throw zipError(
      'ZIP_LOCAL_HEADER_MISMATCH',
      `${what}: ${field} is ${local}, the central directory says ${central}`,
      at + off,
    );
  };
  if (Buffer.compare(name, e.nameBytes) !== 0)
    mismatch('name', JSON.stringify(Buffer.from(name).toString('latin1')), JSON.stringify(e.name), 0x1e);
  if (flags !== e.flags) mismatch('flags', hex(flags, 4), hex(e.flags, 4), 0x06);
  if (method !== e.method) mismatch('method', method, e.method, 0x08);

  const bit3 = (e.flags & ZIP_FLAG_DESCRIPTOR) !== 0;
  const records = parseExtra(extra, at + ZIP_LOCAL_HEADER_SIZE + nameLength, what);
  const zip64Records = records.filter((r) => r.id === ZIP_EXTRA_ZIP64);
  if (zip64Records.length > 1)
    throw zipError(
      'ZIP_EXTRA_FIELD_INVALID',
      `${what} repeats the zip64 extra record`,
      at + ZIP_LOCAL_HEADER_SIZE + nameLength,
    );
  // A value slot holds the real value, or 0 when a data descriptor carries it (§4.4.4 bit 3).
  const agrees = (raw: number, real: number): boolean => raw === real || (bit3 && raw === 0);
  if (!agrees(crc, e.crc32)) mismatch('CRC-32', hex(crc), hex(e.crc32), 0x0e);
  if (compressedSize === ZIP_U32_SENTINEL || uncompressedSize === ZIP_U32_SENTINEL) {
    // §4.5.3: the local zip64 field holds both sizes, uncompressed first.
    if (!zip64Records[0])
      throw zipError('ZIP_ZIP64_INVALID', `${what} has zip64 sentinels but no zip64 extra field`, at + 0x12);
    const v = readZip64Slots(
      zip64Records[0].data,
      ['uncompressedSize', 'compressedSize'],
      at + ZIP_LOCAL_HEADER_SIZE + nameLength,
      what,
    );
    if (!agrees(v.uncompressedSize!, e.uncompressedSize))
      mismatch(
        'zip64 uncompressed size',
        v.uncompressedSize!,
        e.uncompressedSize,
        ZIP_LOCAL_HEADER_SIZE + nameLength,
      );
    if (!agrees(v.compressedSize!, e.compressedSize))
      mismatch(
        'zip64 compressed size',
        v.compressedSize!,
        e.compressedSize,
        ZIP_LOCAL_HEADER_SIZE + nameLength,
      );
  }
  if (compressedSize !== ZIP_U32_SENTINEL && !agrees(compressedSize, e.compressedSize))
    mismatch('compressed size', compressedSize, e.compressedSize, 0x12);
  if (uncompressedSize !== ZIP_U32_SENTINEL && !agrees(uncompressedSize, e.uncompressedSize))
    mismatch('uncompressed size', uncompressedSize, e.uncompressedSize, 0x16);

  const length = ZIP_LOCAL_HEADER_SIZE + nameLength + extraLength;
  e.local = {
    versionNeeded,
    flags,
    method,
    dosTime,
    dosDate,
    crc32: crc,
    compressedSize,
    uncompressedSize,
    extra,
    length,
  };
  e.dataOffset = at + length;
  if (e.dataOffset + e.compressedSize > cdOffset)
    throw zipError(
      'ZIP_ENTRY_OUT_OF_BOUNDS',
      `data of ${JSON.stringify(e.name)} [${e.dataOffset}, +${e.compressedSize}) runs past the central directory at ${cdOffset}`,
      e.dataOffset,
    );
}

/** Descriptor forms by length (§4.3.9): signature or not, 4- or 8-byte sizes. */
const DESCRIPTOR_FORMS: Record<number, Omit<ZipDataDescriptor, 'length'>> = {
  12: { signature: false, zip64: false },
  16: { signature: true, zip64: false },
  20: { signature: false, zip64: true },
  24: { signature: true, zip64: true },
};

/**
 * Entries sorted by local-header offset must tile [0, central directory) exactly: the first at 0 (no
 * prefix: a self-extractor stub or prepended bytes would be dropped or left unsigned by a rewrite), each
 * next one where the previous ends (no overlap: the overlapping-entries bomb; no gap: hidden data).
 * Bit-3 entries end with a descriptor that fills the space up to the next structure exactly and agrees
 * with the central record — so its form is never guessed from the data, which a stored entry could fake.
 */
async function checkLayout(window: ReadWindow, sorted: readonly ZipEntry[], cdOffset: number): Promise<void> {
  const first = sorted[0]?.localHeaderOffset ?? cdOffset;
  if (first !== 0)
    throw zipError(
      'ZIP_UNREFERENCED_BYTES',
      `${first} bytes before the first local header (a prefix such as a self-extractor stub is not supported)`,
      0,
    );
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    const next = sorted[i + 1];
    const boundary = next ? next.localHeaderOffset : cdOffset;
    const dataEnd = e.dataOffset + e.compressedSize;
    if (dataEnd > boundary)
      throw zipError(
        'ZIP_ENTRY_OVERLAP',
        `entry ${JSON.stringify(e.name)} [${e.localHeaderOffset}, ${dataEnd}) overlaps ${JSON.stringify(next!.name)} at ${boundary}`,
        boundary,
      );
    const gap = boundary - dataEnd;
    if (!(e.flags & ZIP_FLAG_DESCRIPTOR)) {
      if (gap !== 0)
        throw zipError(
          'ZIP_UNREFERENCED_BYTES',
          `${gap} bytes after entry ${JSON.stringify(e.name)} belong to no entry`,
          dataEnd,
        );
      e.end = dataEnd;
      continue;
    }
    const form = DESCRIPTOR_FORMS[gap];
    if (!form)
      throw zipError(
        'ZIP_DESCRIPTOR_INVALID',
        `entry ${JSON.stringify(e.name)} has flag bit 3 but the ${gap} bytes after its data are not a data descriptor`,
        dataEnd,
      );
    const c = new Cursor(await window.read(dataEnd, gap), ZIP_FORMAT, dataEnd, 'ZIP_DESCRIPTOR_INVALID');
    if (form.signature && c.u32le() !== ZIP_SIG_DESCRIPTOR)
      throw zipError(
        'ZIP_DESCRIPTOR_INVALID',
        `the ${gap} bytes after ${JSON.stringify(e.name)} do not start with the descriptor signature`,
        dataEnd,
      );
    const crc = c.u32le();
    const compressed = form.zip64 ? readU64(c) : c.u32le();
    const uncompressed = form.zip64 ? readU64(c) : c.u32le();
    if (crc !== e.crc32 || compressed !== e.compressedSize || uncompressed !== e.uncompressedSize)
      throw zipError(
        'ZIP_DESCRIPTOR_INVALID',
        `data descriptor of ${JSON.stringify(e.name)} says CRC ${hex(crc)}, sizes ${compressed}/${uncompressed}; the central directory ${hex(e.crc32)}, ${e.compressedSize}/${e.uncompressedSize}`,
        dataEnd,
      );
    e.descriptor = { ...form, length: gap };
    e.end = boundary;
  }
}

/** The raw compressed bytes of one entry. */
export async function readEntryData(source: ByteSource, entry: ZipEntry): Promise<Uint8Array> {
  return readRange(
    source,
    entry.dataOffset,
    entry.compressedSize,
    'ZIP_ENTRY_OUT_OF_BOUNDS',
    `data of ${JSON.stringify(entry.name)}`,
  );
}

/** The entry's whole stored span: local header, compressed data and descriptor, as in the file. */
export async function readEntrySpan(source: ByteSource, entry: ZipEntry): Promise<Uint8Array> {
  return readRange(
    source,
    entry.localHeaderOffset,
    entry.end - entry.localHeaderOffset,
    'ZIP_ENTRY_OUT_OF_BOUNDS',
    `entry ${JSON.stringify(entry.name)}`,
  );
}
