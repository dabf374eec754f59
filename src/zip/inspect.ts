/**
 * What `marsign mar info|list` show for a zip (src/cli/commands/mar.ts): content sniffing, a summary,
 * zipinfo's short listing and a JSON view with every field. No rendering of MARs here.
 */
import { open } from 'node:fs/promises';
import { isZipMagic } from '../formats/zip/index.js';
import {
  ZIP_FLAG_DESCRIPTOR,
  ZIP_FLAG_ENCRYPTED,
  ZIP_METHOD_DEFLATE,
  fromDosDateTime,
  parseExtra,
  type ZipEntry,
  type ZipInfo,
} from '../formats/zip/index.js';

export type Container = 'mar' | 'zip' | 'unknown';

/** MAR (`MAR1`) or zip (`PK\3\4`, or `PK\5\6` for an empty archive) by the first bytes, not the name. */
export function containerOf(head: Uint8Array): Container {
  if (isZipMagic(head)) return 'zip';
  if (head.length >= 4 && head[0] === 0x4d && head[1] === 0x41 && head[2] === 0x52 && head[3] === 0x31)
    return 'mar';
  return 'unknown';
}

/** The container of a file by its first 4 bytes. */
export async function sniffContainer(path: string): Promise<Container> {
  const fh = await open(path, 'r');
  try {
    const head = new Uint8Array(4);
    const { bytesRead } = await fh.read(head, 0, 4, 0);
    return containerOf(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

export function zipSummary(info: ZipInfo) {
  return {
    format: 'zip' as const,
    fileSize: info.fileSize,
    entryCount: info.entries.length,
    compressedBytes: info.entries.reduce((n, e) => n + e.compressedSize, 0),
    uncompressedBytes: info.entries.reduce((n, e) => n + e.uncompressedSize, 0),
    descriptors: info.entries.filter((e) => e.descriptor).length,
    centralDirectoryOffset: info.centralDirectoryOffset,
    centralDirectorySize: info.centralDirectorySize,
    eocd: info.eocd,
    zip64: info.zip64 ? { ...info.zip64, extensible: hex(info.zip64.extensible) } : null,
    comment: text(info.comment),
    commentHex: hex(info.comment),
  };
}

/** `deflate` sub-type from flag bits 1-2 (APPNOTE §4.4.4), as zipinfo prints it. */
export function methodName(e: Pick<ZipEntry, 'method' | 'flags'>): string {
  if (e.method === 0) return 'stor';
  if (e.method === ZIP_METHOD_DEFLATE) return `def${'NXFS'[(e.flags >> 1) & 3]}`;
  return `m${e.method}`;
}

const HOSTS: Readonly<Record<number, string>> = { 0: 'fat', 3: 'unx', 10: 'ntf', 19: 'osx' };
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** zipinfo's permission string: Unix mode bits when made on Unix, else the MS-DOS attributes. */
export function permissions(
  e: Pick<ZipEntry, 'versionMadeBy' | 'externalAttributes' | 'isDirectory'>,
): string {
  if (e.versionMadeBy >> 8 === 3 && e.externalAttributes >>> 16 !== 0) {
    const m = e.externalAttributes >>> 16;
    const type = { 0o040000: 'd', 0o120000: 'l', 0o100000: '-' }[m & 0o170000] ?? '?';
    const rwx = (b: number): string => `${b & 4 ? 'r' : '-'}${b & 2 ? 'w' : '-'}${b & 1 ? 'x' : '-'}`;
    return type + rwx(m >> 6) + rwx(m >> 3) + rwx(m);
  }
  const a = e.externalAttributes & 0xff;
  return `${a & 0x10 || e.isDirectory ? 'd' : '-'}r${a & 1 ? '-' : 'w'}${a & 0x20 ? 'a' : '-'}${a & 2 ? 'h' : '-'}${a & 4 ? 's' : '-'}-`;
}

/** One line of `zipinfo` (short form): mode, version, host, size, t/b + l/x/X, method, date, name. */
export function zipinfoLine(e: ZipEntry): string {
  const v = e.versionMadeBy & 0xff;
  const host = HOSTS[e.versionMadeBy >> 8] ?? `h${e.versionMadeBy >> 8}`;
  const tb = e.internalAttributes & 1 ? 't' : 'b';
  const descriptor = (e.flags & ZIP_FLAG_DESCRIPTOR) !== 0;
  const extra = e.extra.length > 0;
  const lx = descriptor ? (extra ? 'X' : 'l') : extra ? 'x' : '-';
  const y = 1980 + (e.dosDate >> 9);
  const date = `${String(y % 100).padStart(2, '0')}-${MONTHS[((e.dosDate >> 5) & 15) - 1] ?? '???'}-${String(e.dosDate & 31).padStart(2, '0')}`;
  const time = `${String(e.dosTime >> 11).padStart(2, '0')}:${String((e.dosTime >> 5) & 63).padStart(2, '0')}`;
  return `${permissions(e).padEnd(10)}  ${(v / 10).toFixed(1)} ${host} ${String(e.uncompressedSize).padStart(8)} ${e.flags & ZIP_FLAG_ENCRYPTED ? tb.toUpperCase() : tb}${lx} ${methodName(e)} ${date} ${time} ${e.name}`;
}

/** Every field of an entry, byte arrays as hex, for `--json`. */
export function zipEntryView(e: ZipEntry) {
  const extraIds = (b: Uint8Array): string[] => {
    try {
      return parseExtra(b, 0, 'extra').map((r) => `0x${r.id.toString(16).padStart(4, '0')}`);
    } catch {
      return [];
    }
  };
  return {
    index: e.index,
    name: e.name,
    nameHex: hex(e.nameBytes),
    utf8: e.utf8,
    isDirectory: e.isDirectory,
    mode: permissions(e),
    method: e.method,
    methodName: methodName(e),
    flags: e.flags,
    crc32: e.crc32.toString(16).padStart(8, '0'),
    compressedSize: e.compressedSize,
    uncompressedSize: e.uncompressedSize,
    modified: fromDosDateTime(e.dosDate, e.dosTime),
    dosDate: e.dosDate,
    dosTime: e.dosTime,
    versionMadeBy: e.versionMadeBy,
    versionNeeded: e.versionNeeded,
    internalAttributes: e.internalAttributes,
    externalAttributes: e.externalAttributes,
    localHeaderOffset: e.localHeaderOffset,
    centralOffset: e.centralOffset,
    dataOffset: e.dataOffset,
    end: e.end,
    zip64: e.zip64,
    descriptor: e.descriptor ?? null,
    extra: hex(e.extra),
    extraIds: extraIds(e.extra),
    comment: text(e.comment),
    commentHex: hex(e.comment),
    local: {
      ...e.local,
      crc32: e.local.crc32.toString(16).padStart(8, '0'),
      extra: hex(e.local.extra),
      extraIds: extraIds(e.local.extra),
    },
  };
}

/** zipinfo's short listing: header, one line per entry, totals. */
export function zipinfoListing(path: string, info: ZipInfo): string {
  const files = info.entries.length;
  const u = info.entries.reduce((n, e) => n + e.uncompressedSize, 0);
  const c = info.entries.reduce((n, e) => n + e.compressedSize, 0);
  const pct = u === 0 ? 0 : ((u - c) / u) * 100;
  return [
    `Archive:  ${path}`,
    `Zip file size: ${info.fileSize} bytes, number of entries: ${files}`,
    ...info.entries.map(zipinfoLine),
    `${files} ${files === 1 ? 'file' : 'files'}, ${u} bytes uncompressed, ${c} bytes compressed:  ${pct.toFixed(1)}%`,
  ].join('\n');
}

/** `--verbose` table: where each entry is and how it is stored. */
export function zipVerboseListing(info: ZipInfo): string {
  const rows = info.entries.map((e) => {
    const v = zipEntryView(e);
    const desc = e.descriptor
      ? `${e.descriptor.signature ? 'sig' : 'nosig'}${e.descriptor.zip64 ? '64' : '32'}`
      : '-';
    const z64 = Object.entries(e.zip64)
      .filter(([, on]) => on)
      .map(
        ([k]) => ({ uncompressedSize: 'u', compressedSize: 'c', localHeaderOffset: 'o', diskStart: 'd' })[k],
      )
      .join('');
    const localZ64 =
      e.local.compressedSize === 0xffffffff || e.local.uncompressedSize === 0xffffffff ? 'L' : '';
    return [
      String(e.localHeaderOffset),
      String(e.compressedSize),
      String(e.uncompressedSize),
      v.crc32,
      v.methodName,
      desc,
      z64 + localZ64 || '-',
      v.extraIds.map((x) => x.slice(2)).join(',') || '-',
      e.name,
    ];
  });
  const head = ['OFFSET', 'CSIZE', 'SIZE', 'CRC32', 'METHOD', 'DESC', 'ZIP64', 'EXTRA', 'NAME'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string =>
    r.map((x, i) => (i === r.length - 1 ? x : x.padEnd(widths[i]!))).join(' ');
  return [line(head), ...rows.map(line)].join('\n');
}
