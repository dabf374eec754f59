/**
 * Every good peer MAR reads exactly as ../shared/fixtures/peer-mar/SOURCES.md describes it
 * (values written from SOURCES.md and `xz -lvv`/mardor output there, not from our reader); skipped, with
 * the reason, without ../shared.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { BufferSource } from '../../../src/io/byte-source.js';
import { entryCodecOf, readEntryBytes, readMar, type MarInfo } from '../../../src/formats/mar/index.js';
import { SHARED_SKIP, peerMar } from '../../helpers/env.js';
import { rawMar } from './raw-mar.js';

interface Expect {
  bytes: number;
  style: 'old' | 'modern';
  sigs: [number, number][];
  additionalHeader: boolean;
  pib?: [string, string, boolean];
  /** [name, offset?, size, octal mode, codec]; offset null when SOURCES.md does not state it. */
  entries?: [string, number | null, number, number, string][];
  count: number;
  codec: string;
  dataStart?: number;
}

const LIBMAR_PIB: [string, string, boolean] = ['@MAR_CHANNEL_ID@', '13.0a1', true];
const bd = (off: number, mode = 0o666): [string, number, number, number, string] => [
  'binary_data_file',
  off,
  512,
  mode,
  'none',
];

const GOOD: Record<string, Expect> = {
  'firefox-libmar/0_sized.mar': {
    bytes: 157,
    style: 'modern',
    sigs: [],
    additionalHeader: true,
    pib: LIBMAR_PIB,
    count: 1,
    codec: 'none',
    entries: [['0_sized_file', 128, 0, 0o666, 'none']],
  },
  'firefox-libmar/binary_data.mar': {
    bytes: 673,
    style: 'modern',
    sigs: [],
    additionalHeader: true,
    pib: LIBMAR_PIB,
    count: 1,
    codec: 'none',
    entries: [bd(128)],
  },
  'firefox-libmar/multiple_file.mar': {
    bytes: 723,
    style: 'modern',
    sigs: [],
    additionalHeader: true,
    pib: LIBMAR_PIB,
    count: 3,
    codec: 'none',
    entries: [['0_sized_file', 128, 0, 0o666, 'none'], ['1_byte_file', 128, 1, 0o666, 'none'], bd(129)],
  },
  'firefox-libmar/no_pib.mar': {
    bytes: 553,
    style: 'old',
    sigs: [],
    additionalHeader: false,
    count: 1,
    codec: 'none',
    dataStart: 8,
    entries: [bd(8, 0o664)],
  },
  'firefox-libmar/signed_pib.mar': {
    bytes: 1193,
    style: 'modern',
    sigs: [[2, 512]],
    additionalHeader: true,
    pib: LIBMAR_PIB,
    count: 1,
    codec: 'none',
    entries: [bd(648)],
  },
  'firefox-libmar/signed_no_pib.mar': {
    bytes: 1085,
    style: 'modern',
    sigs: [[2, 512]],
    additionalHeader: false,
    count: 1,
    codec: 'none',
    dataStart: 540,
    entries: [bd(540)],
  },
  'firefox-libmar/multiple_signed_pib.mar': {
    bytes: 2233,
    style: 'modern',
    sigs: [
      [2, 512],
      [2, 512],
      [2, 512],
    ],
    additionalHeader: true,
    pib: LIBMAR_PIB,
    count: 1,
    codec: 'none',
  },
  'firefox-libmar/multiple_signed_pib_2.mar': {
    bytes: 2233,
    style: 'modern',
    sigs: [
      [2, 512],
      [2, 512],
      [2, 512],
    ],
    additionalHeader: true,
    pib: LIBMAR_PIB,
    count: 1,
    codec: 'none',
  },
  'firefox-updater/complete.mar': {
    bytes: 86612,
    style: 'modern',
    sigs: [[2, 512]],
    additionalHeader: true,
    pib: ['xpcshell-test', '*', true],
    count: 21,
    codec: 'xz',
  },
  'firefox-updater/partial.mar': {
    bytes: 9872,
    style: 'modern',
    sigs: [[2, 512]],
    additionalHeader: true,
    pib: ['xpcshell-test', '*', true],
    count: 21,
    codec: 'xz',
  },
  'firefox-updater/old_version.mar': {
    bytes: 709,
    style: 'modern',
    sigs: [[2, 512]],
    additionalHeader: true,
    pib: ['xpcshell-test', '0', true],
    count: 1,
    codec: 'xz',
    entries: [['0_sized_file', null, 32, 0o666, 'xz']],
  },
  'build-mar/test-bz2.mar': {
    bytes: 1201,
    style: 'modern',
    sigs: [[1, 256]],
    additionalHeader: true,
    pib: ['thunderbird-comm-esr', '100.0', true],
    count: 5,
    codec: 'bz2',
  },
  'build-mar/test-xz.mar': {
    bytes: 1056,
    style: 'modern',
    sigs: [],
    additionalHeader: true,
    pib: ['thunderbird-comm-esr', '100.0', true],
    count: 5,
    codec: 'xz',
  },
  'generated-mardor/gen-mardor-xz-bcj-x86-unsigned.mar': {
    bytes: 73021,
    style: 'modern',
    sigs: [],
    additionalHeader: true,
    pib: ['peer-fixture-unsigned', '1.0', false],
    count: 3,
    codec: 'xz',
  },
};

async function load(rel: string): Promise<{ bytes: Uint8Array; info: MarInfo; src: BufferSource }> {
  const bytes = new Uint8Array(await readFile(peerMar(rel)));
  const src = new BufferSource(bytes);
  return { bytes, info: await readMar(src), src };
}

for (const [rel, x] of Object.entries(GOOD)) {
  test(`peer ${rel} reads as SOURCES.md says`, { skip: SHARED_SKIP }, async () => {
    const { bytes, info, src } = await load(rel);
    assert.equal(info.fileSize, x.bytes);
    assert.equal(info.style, x.style);
    if (x.style === 'modern') assert.equal(info.declaredFileSize, x.bytes);
    else assert.equal(info.declaredFileSize, undefined);
    assert.deepEqual(
      info.signatures.map((s) => [s.algorithmId, s.length]),
      x.sigs,
    );
    // Signatures are back to back from offset 20 (after their 8-byte headers).
    let at = 20;
    for (const s of info.signatures) {
      assert.equal(s.offset, at + 8);
      at = s.offset + s.length;
    }
    assert.equal(info.hasAdditionalHeader, x.additionalHeader);
    if (x.pib) {
      assert.deepEqual(info.productInfo, { channel: x.pib[0], version: x.pib[1], padded: x.pib[2] });
      assert.equal(info.additionalSections.length, 1);
      assert.equal(info.additionalSections[0]!.id, 1);
      assert.equal(info.additionalSections[0]!.offset, at + 4);
      // libmar pads to 104 bytes; mardor writes 8 + channel + version + 2 NULs.
      assert.equal(
        info.additionalSections[0]!.size,
        x.pib[2] ? 104 : 8 + x.pib[0].length + x.pib[1].length + 2,
      );
    } else {
      assert.equal(info.productInfo, undefined);
    }
    assert.equal(info.entries.length, x.count);
    if (x.dataStart !== undefined) assert.equal(info.dataStart, x.dataStart);
    if (x.entries) {
      assert.deepEqual(
        info.entries.map((e, i) => [e.name, x.entries![i]![1] === null ? null : e.offset, e.size, e.flags]),
        x.entries.map(([n, o, s, f]) => [n, o, s, f]),
      );
    }
    for (const [i, e] of info.entries.entries()) {
      const raw = await readEntryBytes(src, e);
      assert.equal(raw.length, e.size);
      const codec = e.size === 0 ? 'none' : entryCodecOf(raw);
      assert.equal(codec, x.entries?.[i]?.[4] ?? x.codec, e.name);
    }
    // The index is last: offset_to_index + 4 + index_size == file size.
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    assert.equal(info.indexOffset + 4 + dv.getUint32(info.indexOffset), x.bytes);
  });
}

test('binary_data_file is stored raw: the u16le values 0..255', { skip: SHARED_SKIP }, async () => {
  const { info, src } = await load('firefox-libmar/binary_data.mar');
  const data = await readEntryBytes(src, info.entries[0]!);
  const expected = new Uint8Array(512);
  for (let i = 0; i < 256; i++) expected[2 * i] = i;
  assert.deepEqual(data, expected);
  assert.deepEqual(data, new Uint8Array(await readFile(peerMar('firefox-libmar/binary_data_file'))));
});

test(
  'complete.mar: exe0.exe and 0/0exe0.exe are 38388-byte xz entries, mode 0755',
  { skip: SHARED_SKIP },
  async () => {
    const { info } = await load('firefox-updater/complete.mar');
    for (const name of ['exe0.exe', '0/0exe0.exe']) {
      const e = info.entries.find((x) => x.name === name);
      assert.ok(e, name);
      assert.equal(e.size, 38388);
      assert.equal(e.flags, 0o755);
    }
  },
);

test(
  'test-bz2.mar modes are 0664, test-xz.mar 0644, mardor BCJ file 0644',
  { skip: SHARED_SKIP },
  async () => {
    for (const [rel, mode] of [
      ['build-mar/test-bz2.mar', 0o664],
      ['build-mar/test-xz.mar', 0o644],
      ['generated-mardor/gen-mardor-xz-bcj-x86-unsigned.mar', 0o644],
    ] as const) {
      const { info } = await load(rel);
      assert.ok(
        info.entries.every((e) => e.flags === mode),
        rel,
      );
    }
  },
);

test('reading is random access: only header and index bytes are read', async () => {
  // 40 entries of 20 kB: the data is 800 kB, the index a little over 1 kB.
  const bytes = rawMar({
    entries: Array.from({ length: 40 }, (_, i) => ({
      name: `dir/file-${i}.bin`,
      data: new Uint8Array(20_000).fill(i),
    })),
  });
  let read = 0;
  const src = {
    size: bytes.length,
    read: async (o: number, n: number) => {
      read += n;
      return bytes.subarray(o, o + n);
    },
  };
  const info = await readMar(src);
  assert.equal(info.entries.length, 40);
  const indexBytes = info.fileSize - info.indexOffset;
  assert.ok(read <= indexBytes + 1024, `read ${read} bytes for a ${indexBytes}-byte index`);
});
