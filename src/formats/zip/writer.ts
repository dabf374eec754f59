/**
 * Pure zip encoders (no I/O): local header, data descriptor, central record, zip64 fields and end
 * records. A rewrite keeps every field of the input and changes only what a replaced entry changes (CRC,
 * sizes) or what moving an entry changes (its local-header offset); zip64 forms are kept where the input
 * used them and added only where a value needs them (APPNOTE §4.4.8, §4.5.3).
 */
import {
  encodeExtra,
  encodeZip64Data,
  parseExtra,
  writeU64,
  ZIP64_SLOT_ORDER,
  type Zip64Slot,
} from './extra.js';
import { assertSafeZipName, encodeZipName } from './names.js';
import {
  ZIP64_EOCD_LOCATOR_SIZE,
  ZIP64_EOCD_SIZE,
  ZIP_CENTRAL_HEADER_SIZE,
  ZIP_EOCD_SIZE,
  ZIP_EXTRA_ZIP64,
  ZIP_FLAG_DESCRIPTOR,
  ZIP_FLAG_UTF8,
  ZIP_LOCAL_HEADER_SIZE,
  ZIP_MAX_COMMENT_LENGTH,
  ZIP_METHOD_DEFLATE,
  ZIP_METHOD_STORED,
  ZIP_SIG_CENTRAL,
  ZIP_SIG_DESCRIPTOR,
  ZIP_SIG_EOCD,
  ZIP_SIG_LOCAL,
  ZIP_SIG_ZIP64_EOCD,
  ZIP_SIG_ZIP64_LOCATOR,
  ZIP_U16_SENTINEL,
  ZIP_U32_SENTINEL,
  ZIP_VERSION_ZIP64,
  zipError,
  type ZipDataDescriptor,
  type ZipEntry,
  type ZipEocd,
  type ZipInfo,
  type ZipZip64End,
} from './types.js';

/** What a replaced entry changes: its compressed bytes (given by length here), CRC-32 and size. */
export interface ZipReplacement {
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
}

const needs64 = (v: number): boolean => v >= ZIP_U32_SENTINEL;
const u16Max = 0xffff;

function checkLength(what: string, n: number): void {
  if (n > u16Max)
    throw zipError('ZIP_EXTRA_FIELD_INVALID', `${what} of ${n} bytes does not fit a 16-bit length`);
}

export interface LocalHeaderFields {
  versionNeeded: number;
  flags: number;
  method: number;
  dosTime: number;
  dosDate: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  nameBytes: Uint8Array;
  extra: Uint8Array;
}

/** §4.3.7 local file header: the 32-bit fields are written as given (sentinels and zeros included). */
export function encodeLocalHeader(f: LocalHeaderFields): Uint8Array {
  checkLength('name', f.nameBytes.length);
  checkLength('local extra field', f.extra.length);
  const out = new Uint8Array(ZIP_LOCAL_HEADER_SIZE + f.nameBytes.length + f.extra.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0x00, ZIP_SIG_LOCAL, true);
  dv.setUint16(0x04, f.versionNeeded, true);
  dv.setUint16(0x06, f.flags, true);
  dv.setUint16(0x08, f.method, true);
  dv.setUint16(0x0a, f.dosTime, true);
  dv.setUint16(0x0c, f.dosDate, true);
  dv.setUint32(0x0e, f.crc32 >>> 0, true);
  dv.setUint32(0x12, f.compressedSize, true);
  dv.setUint32(0x16, f.uncompressedSize, true);
  dv.setUint16(0x1a, f.nameBytes.length, true);
  dv.setUint16(0x1c, f.extra.length, true);
  out.set(f.nameBytes, ZIP_LOCAL_HEADER_SIZE);
  out.set(f.extra, ZIP_LOCAL_HEADER_SIZE + f.nameBytes.length);
  return out;
}

/** §4.3.9 data descriptor in the given form. */
export function encodeDescriptor(
  form: Pick<ZipDataDescriptor, 'signature' | 'zip64'>,
  crc32: number,
  compressedSize: number,
  uncompressedSize: number,
): Uint8Array {
  if (!form.zip64 && (needs64(compressedSize) || needs64(uncompressedSize)))
    throw zipError('ZIP_WRITER_STATE', 'a 32-bit data descriptor cannot hold sizes of 4 GiB or more');
  const out = new Uint8Array((form.signature ? 4 : 0) + 4 + (form.zip64 ? 16 : 8));
  const dv = new DataView(out.buffer);
  let pos = 0;
  if (form.signature) {
    dv.setUint32(0, ZIP_SIG_DESCRIPTOR, true);
    pos = 4;
  }
  dv.setUint32(pos, crc32 >>> 0, true);
  if (form.zip64) {
    writeU64(dv, pos + 4, compressedSize);
    writeU64(dv, pos + 12, uncompressedSize);
  } else {
    dv.setUint32(pos + 4, compressedSize, true);
    dv.setUint32(pos + 8, uncompressedSize, true);
  }
  return out;
}

/**
 * The local header and descriptor of a replaced entry: the input's header with only the CRC and sizes
 * changed, each written in the form the input used (the value; 0 where flag bit 3 defers it to the
 * descriptor; the zip64 sentinel with the value, or 0, in the local zip64 field). A zip64 field is added
 * only if a new size needs it.
 */
export function encodeReplacedLocal(
  entry: ZipEntry,
  r: ZipReplacement,
): { header: Uint8Array; descriptor: Uint8Array | undefined } {
  const l = entry.local;
  const bit3 = (entry.flags & ZIP_FLAG_DESCRIPTOR) !== 0;
  const deferred = (raw: number): boolean => bit3 && raw === 0;
  const records = parseExtra(l.extra, 0, `local extra field of ${JSON.stringify(entry.name)}`);
  const z = records.find((rec) => rec.id === ZIP_EXTRA_ZIP64);
  const needs = needs64(r.compressedSize) || needs64(r.uncompressedSize);
  const sentinel = l.compressedSize === ZIP_U32_SENTINEL || l.uncompressedSize === ZIP_U32_SENTINEL;
  let versionNeeded = l.versionNeeded;
  let extra = l.extra;
  let compressedSize = deferred(l.compressedSize) ? 0 : r.compressedSize;
  let uncompressedSize = deferred(l.uncompressedSize) ? 0 : r.uncompressedSize;
  if (sentinel || needs) {
    const origSlots: Zip64Slot[] = ['uncompressedSize', 'compressedSize'];
    // Which zip64 slots stay 0 (deferred to the descriptor): judged on the input's zip64 slot when
    // the header pointed there, else on the header field.
    let usZero: boolean;
    let csZero: boolean;
    if (sentinel && z && z.data.length >= 16) {
      const dv = new DataView(z.data.buffer, z.data.byteOffset, z.data.byteLength);
      const u64Zero = (at: number): boolean =>
        dv.getUint32(at, true) === 0 && dv.getUint32(at + 4, true) === 0;
      usZero = bit3 && u64Zero(0);
      csZero = bit3 && u64Zero(8);
    } else {
      usZero = deferred(l.uncompressedSize);
      csZero = deferred(l.compressedSize);
    }
    const data = encodeZip64Data(
      { uncompressedSize: usZero ? 0 : r.uncompressedSize, compressedSize: csZero ? 0 : r.compressedSize },
      z ? { data: z.data, slots: origSlots } : undefined,
    );
    extra = encodeExtra(
      z
        ? records.map((rec) => (rec === z ? { id: rec.id, data } : rec))
        : [...records, { id: ZIP_EXTRA_ZIP64, data }],
    );
    const fresh = !sentinel;
    compressedSize =
      fresh || l.compressedSize === ZIP_U32_SENTINEL || needs64(r.compressedSize)
        ? ZIP_U32_SENTINEL
        : compressedSize;
    uncompressedSize =
      fresh || l.uncompressedSize === ZIP_U32_SENTINEL || needs64(r.uncompressedSize)
        ? ZIP_U32_SENTINEL
        : uncompressedSize;
    if (!z) versionNeeded = Math.max(versionNeeded, ZIP_VERSION_ZIP64);
  }
  const header = encodeLocalHeader({
    versionNeeded,
    flags: l.flags,
    method: l.method,
    dosTime: l.dosTime,
    dosDate: l.dosDate,
    crc32: deferred(l.crc32) ? 0 : r.crc32,
    compressedSize,
    uncompressedSize,
    nameBytes: entry.nameBytes,
    extra,
  });
  const descriptor = entry.descriptor
    ? encodeDescriptor(
        { signature: entry.descriptor.signature, zip64: entry.descriptor.zip64 || needs },
        r.crc32,
        r.compressedSize,
        r.uncompressedSize,
      )
    : undefined;
  return { header, descriptor };
}

/** Where an entry lands in the output and the values its central record must carry. */
export interface CentralValues {
  localHeaderOffset: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
}

/**
 * §4.3.12 central record: the input's record (flags, times, attributes, extra, comment as stored) with the
 * new offset, CRC and sizes. A field stays zip64 if the input had the sentinel there and becomes zip64 if
 * its value needs it; the zip64 extra record is rewritten in place, other extra records are untouched.
 */
export function encodeCentralRecord(entry: ZipEntry, v: CentralValues): Uint8Array {
  const values: Record<Zip64Slot, number> = {
    uncompressedSize: v.uncompressedSize,
    compressedSize: v.compressedSize,
    localHeaderOffset: v.localHeaderOffset,
    diskStart: 0,
  };
  const sentinel = (s: Zip64Slot): boolean => entry.zip64[s] || (s !== 'diskStart' && needs64(values[s]));
  const slots = ZIP64_SLOT_ORDER.filter(sentinel);
  let extra = entry.extra;
  let versionNeeded = entry.versionNeeded;
  if (slots.length > 0) {
    const records = parseExtra(entry.extra, 0, `central extra field of ${JSON.stringify(entry.name)}`);
    const z = records.find((r) => r.id === ZIP_EXTRA_ZIP64);
    const origSlots = ZIP64_SLOT_ORDER.filter((s) => entry.zip64[s]);
    const data = encodeZip64Data(
      Object.fromEntries(slots.map((s) => [s, values[s]])),
      z ? { data: z.data, slots: origSlots } : undefined,
    );
    extra = encodeExtra(
      z
        ? records.map((r) => (r === z ? { id: r.id, data } : r))
        : [...records, { id: ZIP_EXTRA_ZIP64, data }],
    );
    if (!z) versionNeeded = Math.max(versionNeeded, ZIP_VERSION_ZIP64);
  }
  checkLength('name', entry.nameBytes.length);
  checkLength('central extra field', extra.length);
  checkLength('file comment', entry.comment.length);
  const out = new Uint8Array(
    ZIP_CENTRAL_HEADER_SIZE + entry.nameBytes.length + extra.length + entry.comment.length,
  );
  const dv = new DataView(out.buffer);
  const field32 = (s: Zip64Slot): number => (sentinel(s) ? ZIP_U32_SENTINEL : values[s]);
  dv.setUint32(0x00, ZIP_SIG_CENTRAL, true);
  dv.setUint16(0x04, entry.versionMadeBy, true);
  dv.setUint16(0x06, versionNeeded, true);
  dv.setUint16(0x08, entry.flags, true);
  dv.setUint16(0x0a, entry.method, true);
  dv.setUint16(0x0c, entry.dosTime, true);
  dv.setUint16(0x0e, entry.dosDate, true);
  dv.setUint32(0x10, v.crc32 >>> 0, true);
  dv.setUint32(0x14, field32('compressedSize'), true);
  dv.setUint32(0x18, field32('uncompressedSize'), true);
  dv.setUint16(0x1c, entry.nameBytes.length, true);
  dv.setUint16(0x1e, extra.length, true);
  dv.setUint16(0x20, entry.comment.length, true);
  dv.setUint16(0x22, sentinel('diskStart') ? ZIP_U16_SENTINEL : 0, true);
  dv.setUint16(0x24, entry.internalAttributes, true);
  dv.setUint32(0x26, entry.externalAttributes >>> 0, true);
  dv.setUint32(0x2a, field32('localHeaderOffset'), true);
  let pos = ZIP_CENTRAL_HEADER_SIZE;
  out.set(entry.nameBytes, pos);
  out.set(extra, (pos += entry.nameBytes.length));
  out.set(entry.comment, pos + extra.length);
  return out;
}

/** What the end records keep from the input: the comment, which EOCD fields were sentinels, the zip64 record. */
export interface ZipEndTemplate {
  comment: Uint8Array;
  eocd?: Pick<
    ZipEocd,
    | 'diskNumber'
    | 'centralDirectoryDisk'
    | 'entriesOnDisk'
    | 'totalEntries'
    | 'centralDirectorySize'
    | 'centralDirectoryOffset'
  >;
  zip64?: Pick<ZipZip64End, 'versionMadeBy' | 'versionNeeded' | 'extensible' | 'locatorTotalDisks'>;
}

export function endTemplateOf(info: ZipInfo): ZipEndTemplate {
  const t: ZipEndTemplate = { comment: info.comment, eocd: info.eocd };
  if (info.zip64) t.zip64 = info.zip64;
  return t;
}

/**
 * §4.3.14-16: zip64 end record + locator (if the input had them or a count/size/offset needs them),
 * then the EOCD. An EOCD field is the sentinel where its value needs zip64 or the input had one there.
 */
export function encodeEnd(
  t: ZipEndTemplate,
  cd: { offset: number; size: number; entries: number },
): Uint8Array {
  if (t.comment.length > ZIP_MAX_COMMENT_LENGTH)
    throw zipError(
      'ZIP_WRITER_STATE',
      `archive comment of ${t.comment.length} bytes exceeds ${ZIP_MAX_COMMENT_LENGTH}`,
    );
  // Exactly 65535 entries fit the EOCD field as a literal (readers only look for zip64 with a locator).
  const countNeeds = cd.entries > u16Max;
  const sizeNeeds = needs64(cd.size);
  const offsetNeeds = needs64(cd.offset);
  const write64 = countNeeds || sizeNeeds || offsetNeeds || t.zip64 !== undefined;
  const kept = (raw: number | undefined, sentinel: number): boolean =>
    t.zip64 !== undefined && raw === sentinel;
  const zip64Size = write64
    ? ZIP64_EOCD_SIZE + (t.zip64?.extensible.length ?? 0) + ZIP64_EOCD_LOCATOR_SIZE
    : 0;
  const out = new Uint8Array(zip64Size + ZIP_EOCD_SIZE + t.comment.length);
  const dv = new DataView(out.buffer);
  if (write64) {
    const ext = t.zip64?.extensible ?? new Uint8Array(0);
    dv.setUint32(0x00, ZIP_SIG_ZIP64_EOCD, true);
    writeU64(dv, 0x04, ZIP64_EOCD_SIZE - 12 + ext.length);
    dv.setUint16(0x0c, t.zip64?.versionMadeBy ?? ZIP_VERSION_ZIP64, true);
    dv.setUint16(0x0e, t.zip64?.versionNeeded ?? ZIP_VERSION_ZIP64, true);
    dv.setUint32(0x10, 0, true);
    dv.setUint32(0x14, 0, true);
    writeU64(dv, 0x18, cd.entries);
    writeU64(dv, 0x20, cd.entries);
    writeU64(dv, 0x28, cd.size);
    writeU64(dv, 0x30, cd.offset);
    out.set(ext, ZIP64_EOCD_SIZE);
    const loc = ZIP64_EOCD_SIZE + ext.length;
    dv.setUint32(loc, ZIP_SIG_ZIP64_LOCATOR, true);
    dv.setUint32(loc + 4, 0, true);
    writeU64(dv, loc + 8, cd.offset + cd.size);
    dv.setUint32(loc + 16, t.zip64?.locatorTotalDisks ?? 1, true);
  }
  const e = zip64Size;
  const ev = t.eocd;
  dv.setUint32(e, ZIP_SIG_EOCD, true);
  dv.setUint16(e + 0x04, kept(ev?.diskNumber, ZIP_U16_SENTINEL) ? ZIP_U16_SENTINEL : 0, true);
  dv.setUint16(e + 0x06, kept(ev?.centralDirectoryDisk, ZIP_U16_SENTINEL) ? ZIP_U16_SENTINEL : 0, true);
  dv.setUint16(
    e + 0x08,
    countNeeds || kept(ev?.entriesOnDisk, ZIP_U16_SENTINEL) ? ZIP_U16_SENTINEL : cd.entries,
    true,
  );
  dv.setUint16(
    e + 0x0a,
    countNeeds || kept(ev?.totalEntries, ZIP_U16_SENTINEL) ? ZIP_U16_SENTINEL : cd.entries,
    true,
  );
  dv.setUint32(
    e + 0x0c,
    sizeNeeds || kept(ev?.centralDirectorySize, ZIP_U32_SENTINEL) ? ZIP_U32_SENTINEL : cd.size,
    true,
  );
  dv.setUint32(
    e + 0x10,
    offsetNeeds || kept(ev?.centralDirectoryOffset, ZIP_U32_SENTINEL) ? ZIP_U32_SENTINEL : cd.offset,
    true,
  );
  dv.setUint16(e + 0x14, t.comment.length, true);
  out.set(t.comment, e + ZIP_EOCD_SIZE);
  return out;
}

/** MS-DOS date and time (§4.4.6) of a Date's UTC fields, 2-second resolution, clamped to 1980-2107. */
export function toDosDateTime(d: Date): { dosDate: number; dosTime: number } {
  const year = Math.min(2107, Math.max(1980, d.getUTCFullYear()));
  return {
    dosDate: ((year - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate(),
    dosTime: (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1),
  };
}

export function fromDosDateTime(dosDate: number, dosTime: number): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${p(1980 + (dosDate >> 9), 4)}-${p((dosDate >> 5) & 15)}-${p(dosDate & 31)} ${p(dosTime >> 11)}:${p((dosTime >> 5) & 63)}:${p((dosTime & 31) * 2)}`;
}

export interface NewZipEntry {
  /** `/`-separated relative path; a directory ends with `/`. */
  name: string;
  /** Default deflate for files, stored for directories. */
  method?: typeof ZIP_METHOD_STORED | typeof ZIP_METHOD_DEFLATE;
  /** Default 1980-01-01 00:00:00 (deterministic output). */
  mtime?: Date;
  /** Unix permission bits (default 0o644, 0o755 for directories). */
  mode?: number;
  /** Write a data descriptor (flag bit 3) as streaming writers do. */
  descriptor?: boolean;
  extra?: Uint8Array;
  comment?: Uint8Array;
}

/** Unix host, version 3.0: what Info-ZIP zip writes (version made by, §4.4.2). */
const MADE_BY_UNIX = (3 << 8) | 30;

/**
 * A ZipEntry for a file that is not in any input zip, to be added as a replaced entry (ZipWriter) with
 * its compressed bytes, CRC and size. Unix mode in the external attributes (as Info-ZIP does), UTF-8
 * flag for non-ASCII names.
 */
export function newZipEntry(spec: NewZipEntry, index: number): ZipEntry {
  assertSafeZipName(spec.name);
  const isDirectory = spec.name.endsWith('/');
  const { bytes, utf8 } = encodeZipName(spec.name);
  const method = spec.method ?? (isDirectory ? ZIP_METHOD_STORED : ZIP_METHOD_DEFLATE);
  const flags = (utf8 ? ZIP_FLAG_UTF8 : 0) | (spec.descriptor ? ZIP_FLAG_DESCRIPTOR : 0);
  const { dosDate, dosTime } = toDosDateTime(spec.mtime ?? new Date(Date.UTC(1980, 0, 1)));
  const mode = (isDirectory ? 0o040000 : 0o100000) | (spec.mode ?? (isDirectory ? 0o755 : 0o644));
  const versionNeeded = method === ZIP_METHOD_DEFLATE ? 20 : 10;
  const extra = spec.extra ?? new Uint8Array(0);
  const entry: ZipEntry = {
    index,
    name: spec.name,
    nameBytes: bytes,
    utf8,
    isDirectory,
    centralOffset: 0,
    versionMadeBy: MADE_BY_UNIX,
    versionNeeded,
    flags,
    method,
    dosTime,
    dosDate,
    crc32: 0,
    compressedSize: 0,
    uncompressedSize: 0,
    diskStart: 0,
    internalAttributes: 0,
    externalAttributes: ((mode << 16) | (isDirectory ? 0x10 : 0)) >>> 0,
    localHeaderOffset: 0,
    extra,
    comment: spec.comment ?? new Uint8Array(0),
    zip64: { uncompressedSize: false, compressedSize: false, localHeaderOffset: false, diskStart: false },
    local: {
      versionNeeded,
      flags,
      method,
      dosTime,
      dosDate,
      crc32: 0,
      compressedSize: 0,
      uncompressedSize: 0,
      extra,
      length: ZIP_LOCAL_HEADER_SIZE + bytes.length + extra.length,
    },
    dataOffset: 0,
    end: 0,
  };
  if (spec.descriptor) entry.descriptor = { signature: true, zip64: false, length: 16 };
  return entry;
}
