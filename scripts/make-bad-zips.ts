/**
 * Regenerates fixtures/zip/bad/: one hostile zip per error code, named `<CODE>[.<variant>].zip`
 * (test/formats/zip/malformed.test.ts asserts each file's code). Run:
 *   node --import tsx scripts/make-bad-zips.ts
 * Files whose code is found only when data is decoded or extracted (ZIP_CRC_MISMATCH, ZIP_SIZE_MISMATCH,
 * ZIP_UNSAFE_EXTRACT, CODEC_*) are readable by readZip and must fail extractZip. Codes whose fixture
 * would be huge (ZIP_TOO_LARGE > 8 GiB, ZIP_EXTRACT_TOO_LARGE > 8 GiB declared) are built in memory by
 * the test instead.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import { PROJECT_ROOT } from '../src/version.js';
import { concat, extraRecord, rawZip, type RawZipEntry } from '../test/formats/zip/raw-zip.js';

const OUT = join(PROJECT_ROOT, 'fixtures', 'zip', 'bad');
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const hello = bytes('hello, zip\n');
const one = (name: string | Uint8Array, e: Partial<RawZipEntry> = {}): RawZipEntry[] => [
  { name, content: hello, ...e },
];
const valid = rawZip({ entries: one('a.txt') });

/** Info-ZIP Unicode Path extra field (§4.6.9) for a header name. */
function unicodePath(headerName: string, unicodeName: string): Uint8Array {
  const d = new Uint8Array(5 + bytes(unicodeName).length);
  d[0] = 1;
  new DataView(d.buffer).setUint32(1, crc32(bytes(headerName)), true);
  d.set(bytes(unicodeName), 5);
  return extraRecord(0x7075, d);
}

function patch16(b: Uint8Array, at: number, v: number): Uint8Array {
  const out = new Uint8Array(b);
  new DataView(out.buffer).setUint16(at, v, true);
  return out;
}

const files: Record<string, Uint8Array> = {
  'ZIP_TRUNCATED.zip': bytes('PK\x05\x06\0\0\0\0'),
  'ZIP_TRUNCATED.comment.zip': rawZip({
    entries: one('a.txt'),
    eocd: { commentLength: 100 },
    comment: bytes('short'),
  }),
  'ZIP_NO_EOCD.zip': valid.subarray(0, valid.length - 22),
  'ZIP_NO_EOCD.mar.zip': bytes('MAR1\0\0\0\x10\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0'),
  'ZIP_TRAILING_BYTES.zip': rawZip({ entries: one('a.txt'), trailing: bytes('junk') }),
  // The real end record's comment is a second, fake end record that also ends at EOF.
  'ZIP_AMBIGUOUS_EOCD.zip': rawZip({
    entries: one('a.txt'),
    comment: concat([bytes('PK\x05\x06'), new Uint8Array(18)]),
  }),
  'ZIP_MULTI_DISK.zip': rawZip({ entries: one('a.txt'), eocd: { diskNumber: 1, centralDirectoryDisk: 1 } }),
  'ZIP_MULTI_DISK.entries.zip': rawZip({ entries: one('a.txt'), eocd: { entriesOnDisk: 0 } }),
  'ZIP_MULTI_DISK.locator.zip': rawZip({
    entries: one('a.txt'),
    zip64End: { sentinels: true, locatorTotalDisks: 2 },
  }),
  'ZIP_MULTI_DISK.entry.zip': rawZip({ entries: one('a.txt', { diskStart: 1 }) }),
  'ZIP_ZIP64_INVALID.zip': rawZip({ entries: one('a.txt', { uncompressedSize: 0xffffffff, method: 8 }) }),
  'ZIP_ZIP64_INVALID.short-extra.zip': rawZip({
    entries: one('a.txt', {
      method: 8,
      uncompressedSize: 0xffffffff,
      extra: extraRecord(1, new Uint8Array(4)),
    }),
  }),
  'ZIP_ZIP64_INVALID.eocd-mismatch.zip': rawZip({
    entries: one('a.txt'),
    zip64End: { totalEntries: 2, entriesOnDisk: 2 },
  }),
  'ZIP_ZIP64_INVALID.record.zip': rawZip({
    entries: one('a.txt'),
    zip64End: { sentinels: true, signature: 0x06064b51 },
  }),
  'ZIP_ZIP64_INVALID.local.zip': rawZip({
    entries: one('a.txt', { local: { compressedSize: 0xffffffff, uncompressedSize: 0xffffffff } }),
  }),
  'ZIP_CENTRAL_DIRECTORY_OUT_OF_BOUNDS.zip': rawZip({
    entries: one('a.txt'),
    eocd: { centralDirectoryOffset: 0xfffffff0 },
  }),
  'ZIP_CENTRAL_DIRECTORY_OUT_OF_BOUNDS.size.zip': rawZip({
    entries: one('a.txt'),
    eocd: { centralDirectorySize: 1000 },
  }),
  'ZIP_CENTRAL_DIRECTORY_TOO_LARGE.zip': rawZip({
    entries: one('a.txt'),
    eocd: { centralDirectorySize: 0x7fffffff },
  }),
  'ZIP_CENTRAL_DIRECTORY_INVALID.zip': rawZip({ entries: one('a.txt', { centralSignature: 0x02014b51 }) }),
  'ZIP_CENTRAL_DIRECTORY_INVALID.count.zip': rawZip({
    entries: one('a.txt'),
    eocd: { totalEntries: 2, entriesOnDisk: 2 },
  }),
  'ZIP_CENTRAL_DIRECTORY_INVALID.trailer.zip': rawZip({
    entries: one('a.txt'),
    centralTrailer: new Uint8Array(50),
  }),
  'ZIP_TOO_MANY_ENTRIES.zip': rawZip({
    entries: one('a.txt'),
    zip64End: { sentinels: true, totalEntries: 1_000_000, entriesOnDisk: 1_000_000 },
  }),
  'ZIP_EXTRA_FIELD_INVALID.zip': rawZip({
    entries: one('a.txt', { extra: new Uint8Array([0x34, 0x12, 0x10, 0x00, 1, 2]) }),
  }),
  'ZIP_EXTRA_FIELD_INVALID.local.zip': rawZip({
    entries: one('a.txt', { local: { extra: new Uint8Array([0x55, 0x54, 0x09]) } }),
  }),
  'ZIP_EXTRA_FIELD_INVALID.twice.zip': rawZip({
    entries: one('a.txt', {
      extra: concat([extraRecord(1, new Uint8Array(8)), extraRecord(1, new Uint8Array(8))]),
    }),
  }),
  'ZIP_BAD_NAME.dotdot.zip': rawZip({ entries: one('../../evil.sh') }),
  'ZIP_BAD_NAME.inner-dotdot.zip': rawZip({ entries: one('a/../../b') }),
  'ZIP_BAD_NAME.absolute.zip': rawZip({ entries: one('/etc/passwd') }),
  'ZIP_BAD_NAME.backslash.zip': rawZip({ entries: one('..\\..\\evil.exe') }),
  'ZIP_BAD_NAME.drive.zip': rawZip({ entries: one('C:/Windows/evil.exe') }),
  'ZIP_BAD_NAME.control.zip': rawZip({ entries: one('a\x1b[2Jb') }),
  'ZIP_BAD_NAME.empty-segment.zip': rawZip({ entries: one('a//b') }),
  'ZIP_BAD_NAME.empty.zip': rawZip({ entries: one('') }),
  'ZIP_BAD_NAME.utf8.zip': rawZip({ entries: one(new Uint8Array([0x61, 0xff, 0x62]), { flags: 0x800 }) }),
  'ZIP_BAD_NAME.long.zip': rawZip({ entries: one('a'.repeat(1025)) }),
  'ZIP_BAD_NAME.dir-with-data.zip': rawZip({ entries: one('dir/') }),
  // unzip and 7-Zip would extract under the Unicode Path name, so that name is checked too.
  'ZIP_BAD_NAME.unicode-path.zip': rawZip({
    entries: one('good.txt', { extra: unicodePath('good.txt', '../../evil.txt') }),
  }),
  'ZIP_DUPLICATE_NAME.zip': rawZip({ entries: [...one('a'), ...one('b'), ...one('a')] }),
  'ZIP_ENCRYPTED.zip': rawZip({ entries: one('a.txt', { flags: 1 }) }),
  'ZIP_ENCRYPTED.strong.zip': rawZip({ entries: one('a.txt', { flags: 1 | 0x40 }) }),
  'ZIP_ENCRYPTED.aes.zip': rawZip({ entries: one('a.txt', { method: 99, data: new Uint8Array(20) }) }),
  'ZIP_UNSUPPORTED_METHOD.zip': rawZip({ entries: one('a.txt', { method: 12, data: bytes('BZh9') }) }),
  'ZIP_UNSUPPORTED_METHOD.deflate64.zip': rawZip({ entries: one('a.txt', { method: 9, data: bytes('xx') }) }),
  'ZIP_STORED_SIZE_MISMATCH.zip': rawZip({ entries: one('a.txt', { uncompressedSize: 100 }) }),
  'ZIP_ENTRY_TOO_LARGE.zip': rawZip({ entries: one('a.bin', { method: 8, uncompressedSize: 0x7fffffff }) }),
  // 8 MiB of zeros in ~8 KiB: ~1000:1.
  'ZIP_RATIO_TOO_HIGH.zip': rawZip({
    entries: one('bomb.bin', { method: 8, content: new Uint8Array(8 << 20) }),
  }),
  'ZIP_LOCAL_HEADER_OUT_OF_BOUNDS.zip': rawZip({ entries: one('a.txt', { localHeaderOffset: 0x7fffffff }) }),
  'ZIP_LOCAL_HEADER_OUT_OF_BOUNDS.name.zip': patch16(valid, 26, 0xffff), // local name length
  'ZIP_LOCAL_HEADER_INVALID.zip': rawZip({ entries: one('a.txt', { local: { signature: 0x04034b51 } }) }),
  'ZIP_LOCAL_HEADER_MISMATCH.name.zip': rawZip({ entries: one('a.txt', { local: { name: 'b.txt' } }) }),
  'ZIP_LOCAL_HEADER_MISMATCH.method.zip': rawZip({ entries: one('a.txt', { local: { method: 8 } }) }),
  'ZIP_LOCAL_HEADER_MISMATCH.flags.zip': rawZip({ entries: one('a.txt', { local: { flags: 0x800 } }) }),
  'ZIP_LOCAL_HEADER_MISMATCH.crc.zip': rawZip({ entries: one('a.txt', { local: { crc32: 0x12345678 } }) }),
  'ZIP_LOCAL_HEADER_MISMATCH.size.zip': rawZip({
    entries: one('a.txt', { local: { compressedSize: 5, uncompressedSize: 5 } }),
  }),
  'ZIP_ENTRY_OUT_OF_BOUNDS.zip': rawZip({ entries: one('a.txt', { method: 8, compressedSize: 1000 }) }),
  // Entry a's data runs over entry b's local header (the overlapping-files bomb).
  'ZIP_ENTRY_OVERLAP.zip': rawZip({ entries: [...one('a', { method: 8, compressedSize: 20 }), ...one('b')] }),
  // b's central record points at a local header inside a's stored data.
  'ZIP_ENTRY_OVERLAP.nested.zip': (() => {
    const inner = rawZip({ entries: one('b') });
    const b = inner.subarray(0, 30 + 1 + hello.length);
    return rawZip({ entries: [{ name: 'a', content: b }, ...one('b', { localHeaderOffset: 30 + 1 })] });
  })(),
  'ZIP_UNREFERENCED_BYTES.zip': rawZip({ entries: [...one('a', { after: bytes('hidden') }), ...one('b')] }),
  'ZIP_UNREFERENCED_BYTES.prefix.zip': rawZip({ prefix: bytes('MZ\x90\0stub'), entries: one('a.txt') }),
  'ZIP_UNREFERENCED_BYTES.before-cd.zip': rawZip({ entries: one('a.txt', { after: bytes('x') }) }),
  'ZIP_UNREFERENCED_BYTES.after-cd.zip': rawZip({ entries: one('a.txt'), afterCentral: bytes('hidden') }),
  'ZIP_DESCRIPTOR_INVALID.zip': rawZip({ entries: one('a.txt', { descriptor: { crc32: 0 } }) }),
  'ZIP_DESCRIPTOR_INVALID.missing.zip': rawZip({ entries: one('a.txt', { flags: 8, local: { crc32: 0 } }) }),
  // 12-byte descriptor + 4 stray bytes: 16 bytes must be the signed form.
  'ZIP_DESCRIPTOR_INVALID.signature.zip': rawZip({
    entries: one('a.txt', { descriptor: { signature: false }, after: bytes('junk') }),
  }),
  // Readable; refused when decoded or extracted.
  'ZIP_CRC_MISMATCH.zip': rawZip({ entries: one('a.txt', { crc32: 0xdeadbeef }) }),
  'ZIP_CRC_MISMATCH.deflate.zip': rawZip({ entries: one('a.txt', { method: 8, crc32: 0xdeadbeef }) }),
  'ZIP_SIZE_MISMATCH.zip': rawZip({
    entries: one('a.bin', { method: 8, content: new Uint8Array(100_000).fill(7), uncompressedSize: 1000 }),
  }),
  'ZIP_SIZE_MISMATCH.short.zip': rawZip({ entries: one('a.txt', { method: 8, uncompressedSize: 20 }) }),
  'ZIP_UNSAFE_EXTRACT.symlink.zip': rawZip({
    entries: one('link', { content: bytes('/etc/passwd'), externalAttributes: 0o120777 * 0x10000 }),
  }),
  'ZIP_UNSAFE_EXTRACT.file-then-dir.zip': rawZip({ entries: [...one('a'), ...one('a/b')] }),
  'CODEC_CORRUPT.zip': rawZip({
    entries: one('a.txt', { method: 8, data: new Uint8Array([0xff, 0xff, 0xff, 0xff]) }),
  }),
  'CODEC_TRAILING_DATA.zip': rawZip({
    entries: one('a.txt', {
      method: 8,
      data: concat([new Uint8Array(deflateRawSync(hello)), bytes('tail')]),
    }),
  }),
};

mkdirSync(OUT, { recursive: true });
for (const f of readdirSync(OUT)) if (f.endsWith('.zip')) rmSync(join(OUT, f));
for (const [name, data] of Object.entries(files)) writeFileSync(join(OUT, name), data);
console.log(`wrote ${Object.keys(files).length} files to ${OUT}`);
