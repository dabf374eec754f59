/**
 * Regenerates fixtures/mar/bad/: one hostile MAR per error code, named `<CODE>[.<variant>].mar`
 * (test/formats/mar/malformed.test.ts asserts each file's code). Run:
 *   node --import tsx scripts/make-bad-mars.ts
 * Bombs use the real `xz` and `bzip2` CLIs. Codes whose fixture would be huge (MAR_TOO_LARGE: > 500 MiB;
 * MAR_TOO_MANY_ENTRIES: > 65536 records) are exercised in memory by the test instead.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/version.js';
import { pib, rawMar, type RawMar } from '../test/formats/mar/raw-mar.js';

const OUT = join(PROJECT_ROOT, 'fixtures', 'mar', 'bad');
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const one = (name: string, data = bytes('hello')): RawMar['entries'] => [{ name, data }];

const BOMB_SIZE = 64 * 1024 * 1024;
function compressZeros(cmd: string, args: string[]): Uint8Array {
  return new Uint8Array(execFileSync(cmd, args, { input: Buffer.alloc(BOMB_SIZE), maxBuffer: 1 << 26 }));
}

const files: Record<string, Uint8Array> = {
  'MAR_BAD_MAGIC.mar': rawMar({ magic: 'MAR2', entries: one('a') }),
  'MAR_BAD_MAGIC.zip.mar': new Uint8Array([0x50, 0x4b, 0x03, 0x04, ...new Uint8Array(40)]),
  'MAR_TRUNCATED.mar': bytes('MAR1\0\0\0'),
  'MAR_INDEX_OUT_OF_BOUNDS.mar': rawMar({ indexOffset: 0xfffffff0, entries: one('a') }),
  'MAR_INDEX_OUT_OF_BOUNDS.size.mar': rawMar({ indexSize: 1000, entries: one('a') }),
  'MAR_INDEX_SIZE_MISMATCH.short.mar': rawMar({
    indexSize: 10,
    entries: one('a'),
    trailing: new Uint8Array(0),
  }),
  'MAR_INDEX_SIZE_MISMATCH.nonul.mar': (() => {
    // index_size one byte short: the last name's NUL falls outside the index.
    const m = rawMar({ entries: one('abc') });
    const dv = new DataView(m.buffer);
    const io = dv.getUint32(4);
    dv.setUint32(io, dv.getUint32(io) - 1);
    return m;
  })(),
  'MAR_INDEX_TOO_LARGE.mar': rawMar({ indexSize: 0x7fffffff, entries: one('a') }),
  'MAR_EMPTY_INDEX.mar': rawMar({ entries: [] }),
  'MAR_ENTRY_OUT_OF_BOUNDS.mar': rawMar({ entries: [{ name: 'a', data: bytes('x'), size: 0xffffff00 }] }),
  'MAR_ENTRY_OUT_OF_BOUNDS.header.mar': rawMar({
    entries: [
      { name: 'a', data: bytes('abcd') },
      { name: 'b', offset: 12, size: 4 },
    ],
  }),
  // Fuzz regression: an entry offset past EOF must be refused before the header parse follows it.
  // (the signature length field says 40, only 8 bytes follow, so the header would run past EOF).
  'MAR_ENTRY_OUT_OF_BOUNDS.past-eof.mar': rawMar({
    signatures: [{ id: 2, length: 40, bytes: new Uint8Array(8).fill(0xaa) }],
    additional: null,
    entries: [{ name: 'n', data: bytes('z'), offset: 0x10000024 }],
  }),
  'MAR_ENTRY_OVERLAP.mar': rawMar({
    entries: [
      { name: 'a', data: bytes('0123456789'), offset: 128 },
      { name: 'b', data: bytes('xx'), offset: 132, size: 8 },
    ],
  }),
  'MAR_UNREFERENCED_BYTES.mar': rawMar({ entries: [{ name: 'a', data: bytes('abcdef'), size: 3 }] }),
  'MAR_UNREFERENCED_BYTES.header.mar': rawMar({ gap: bytes('hidden'), entries: one('a') }),
  'MAR_BAD_NAME.dotdot.mar': rawMar({ entries: one('../../evil.sh') }),
  'MAR_BAD_NAME.inner-dotdot.mar': rawMar({ entries: one('a/../../b') }),
  'MAR_BAD_NAME.absolute.mar': rawMar({ entries: one('/etc/passwd') }),
  'MAR_BAD_NAME.backslash.mar': rawMar({ entries: one('..\\..\\evil.exe') }),
  'MAR_BAD_NAME.drive.mar': rawMar({ entries: one('C:/Windows/evil.exe') }),
  'MAR_BAD_NAME.control.mar': rawMar({ entries: one('a\x1b[2Jb') }),
  'MAR_BAD_NAME.empty-segment.mar': rawMar({ entries: one('a//b') }),
  'MAR_BAD_NAME.utf8.mar': rawMar({
    entries: [{ name: new Uint8Array([0x61, 0xff, 0x62]), data: bytes('x') }],
  }),
  'MAR_BAD_NAME.long.mar': rawMar({ entries: one('a'.repeat(1025)) }),
  'MAR_DUPLICATE_NAME.mar': rawMar({ entries: [...one('a'), ...one('b'), ...one('a')] }),
  'MAR_TOO_MANY_SIGNATURES.mar': rawMar({
    signatures: Array.from({ length: 9 }, () => ({ id: 2, length: 4 })),
    entries: one('a'),
  }),
  'MAR_TOO_MANY_SIGNATURES.count.mar': rawMar({ signatureCount: 0xffffffff, entries: one('a') }),
  'MAR_SIGNATURE_TOO_LARGE.mar': rawMar({ signatures: [{ id: 2, length: 2049 }], entries: one('a') }),
  'MAR_UNKNOWN_SIGNATURE_ALGORITHM.mar': rawMar({ signatures: [{ id: 7, length: 16 }], entries: one('a') }),
  'MAR_HEADER_OUT_OF_BOUNDS.mar': rawMar({
    signatures: [{ id: 2, length: 16 }],
    signatureCount: 2,
    additional: null,
    entries: one('a'),
  }),
  'MAR_HEADER_OUT_OF_BOUNDS.section.mar': rawMar({
    additional: [{ id: 1, data: pib('c', 'v'), size: 2000 }],
    entries: one('a'),
  }),
  'MAR_FILE_SIZE_MISMATCH.mar': rawMar({ declaredFileSize: 10, entries: one('a') }),
  'MAR_FILE_SIZE_MISMATCH.huge.mar': rawMar({ declaredFileSize: 2 ** 52, entries: one('a') }),
  'MAR_TRAILING_BYTES.mar': rawMar({ trailing: bytes('extra'), entries: one('a') }),
  'MAR_TRAILING_BYTES.old.mar': rawMar({ style: 'old', trailing: bytes('x'), entries: one('a') }),
  'MAR_TOO_MANY_ADDITIONAL_SECTIONS.mar': rawMar({
    additional: Array.from({ length: 9 }, (_, i) => ({ id: 100 + i, data: new Uint8Array(0) })),
    entries: one('a'),
  }),
  'MAR_ADDITIONAL_SECTION_INVALID.mar': rawMar({
    additional: [{ id: 1, data: new Uint8Array(0), size: 4 }],
    entries: one('a'),
  }),
  'MAR_PRODUCT_INFO_INVALID.long-channel.mar': rawMar({
    additional: [{ id: 1, data: pib('c'.repeat(64), '1.0', false) }],
    entries: one('a'),
  }),
  'MAR_PRODUCT_INFO_INVALID.no-nul.mar': rawMar({
    additional: [{ id: 1, data: bytes('channel\0version') }],
    entries: one('a'),
  }),
  'MAR_PRODUCT_INFO_INVALID.padding.mar': rawMar({
    additional: [
      {
        id: 1,
        data: (() => {
          const p = pib('c', 'v');
          p[90] = 1;
          return p;
        })(),
      },
    ],
    entries: one('a'),
  }),
  'MAR_PRODUCT_INFO_INVALID.twice.mar': rawMar({
    additional: [
      { id: 1, data: pib('c', 'v') },
      { id: 1, data: pib('d', 'w') },
    ],
    entries: one('a'),
  }),
  // Valid to read; refused on extraction.
  'MAR_UNSAFE_EXTRACT.file-then-dir.mar': rawMar({ entries: [...one('a'), ...one('a/b')] }),
  'CODEC_OUTPUT_TOO_LARGE.xz-bomb.mar': rawMar({
    entries: [{ name: 'bomb.bin', data: compressZeros('xz', ['-9', '--check=crc64', '-c']) }],
  }),
  'CODEC_OUTPUT_TOO_LARGE.bz2-bomb.mar': rawMar({
    entries: [{ name: 'bomb.bin', data: compressZeros('bzip2', ['-9', '-c']) }],
  }),
};

mkdirSync(OUT, { recursive: true });
for (const f of readdirSync(OUT)) if (f.endsWith('.mar')) rmSync(join(OUT, f));
for (const [name, data] of Object.entries(files)) writeFileSync(join(OUT, name), data);
console.log(`wrote ${Object.keys(files).length} files to ${OUT}`);
