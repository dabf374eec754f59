import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { before, test } from 'node:test';
import { BufferSource } from '../../../src/io/byte-source.js';
import {
  ZIP_FLAG_DESCRIPTOR,
  decodeCp437,
  fromDosDateTime,
  readZip,
  type ZipInfo,
} from '../../../src/formats/zip/index.js';
import { readEntryContent } from '../../../src/zip/index.js';
import { tempDir } from '../../helpers/env.js';
import { rawZip } from './raw-zip.js';
import {
  PY_SAMPLES,
  ZIP_SAMPLES,
  ZIP_SKIP,
  pyDump,
  type PyZip,
  python,
  writePythonSamples,
  writeZipCliSamples,
} from './tools.js';

const samples = new Map<string, string>();
const dir = tempDir();
let dumps: Record<string, PyZip> = {};
before(() => {
  for (const p of writePythonSamples(dir)) samples.set(basename(p), p);
  if (!ZIP_SKIP) for (const p of writeZipCliSamples(dir)) samples.set(basename(p), p);
  dumps = pyDump([...samples.entries()].filter(([n]) => n !== 'py-many.zip').map(([, p]) => p));
});

async function read(name: string): Promise<{ info: ZipInfo; src: BufferSource; bytes: Uint8Array }> {
  const bytes = new Uint8Array(await readFile(samples.get(name)!));
  const src = new BufferSource(bytes);
  return { info: await readZip(src), src, bytes };
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

// py-many.zip (70000 entries) is checked by count and names below: a full Python dump takes ~20 s.
for (const name of [...PY_SAMPLES.filter((n) => n !== 'py-many.zip'), ...ZIP_SAMPLES]) {
  const skip = name.startsWith('zip-') ? ZIP_SKIP : undefined;
  test(`${name}: every field and every entry's content agree with Python's zipfile`, { skip }, async () => {
    const { info, src } = await read(name);
    const py = dumps[samples.get(name)!]!;
    assert.equal(Buffer.from(info.comment).toString('hex'), py.comment);
    assert.equal(info.entries.length, py.entries.length);
    for (const [i, e] of info.entries.entries()) {
      const p = py.entries[i]!;
      assert.equal(e.index, i);
      assert.equal(e.name, p.name);
      assert.equal(e.flags, p.flag_bits, e.name);
      assert.equal(e.method, p.compress_type);
      assert.equal(e.crc32, p.CRC);
      assert.equal(e.compressedSize, p.compress_size);
      assert.equal(e.uncompressedSize, p.file_size);
      assert.equal(e.localHeaderOffset, p.header_offset);
      const [y, mo, d, h, mi, s] = p.date_time.map((n) => String(n).padStart(2, '0'));
      assert.equal(fromDosDateTime(e.dosDate, e.dosTime), `${y}-${mo}-${d} ${h}:${mi}:${s}`);
      assert.equal(e.externalAttributes, p.external_attr);
      assert.equal(e.internalAttributes, p.internal_attr);
      assert.equal(e.versionMadeBy >> 8, p.create_system);
      assert.equal(e.versionMadeBy & 0xff, p.create_version);
      assert.equal(e.versionNeeded, p.extract_version);
      assert.equal(Buffer.from(e.comment).toString('hex'), p.comment);
      if (i < 200) assert.equal(sha256(await readEntryContent(src, e)), p.sha256, e.name);
    }
  });
}

test('py-basic.zip: UTF-8 names (bit 11), a custom extra field, file and archive comments, a directory', async () => {
  const { info } = await read('py-basic.zip');
  const byName = new Map(info.entries.map((e) => [e.name, e]));
  const utf8 = byName.get('firefox/ü/日本.txt')!;
  assert.equal(utf8.utf8, true);
  assert.equal(Buffer.from(utf8.nameBytes).toString('utf8'), 'firefox/ü/日本.txt');
  const exe = byName.get('firefox/firefox.exe')!;
  assert.equal(Buffer.from(exe.extra).toString('hex'), 'feca040061626364');
  assert.equal(Buffer.from(exe.local.extra).toString('hex'), 'feca040061626364');
  assert.equal(Buffer.from(exe.comment).toString(), 'main exe');
  assert.equal(byName.get('firefox/')!.isDirectory, true);
  assert.equal(Buffer.from(info.comment).toString(), 'archive comment ✓');
  assert.equal(info.zip64, undefined);
});

test('py-zip64.zip: forced zip64 → local sentinels and a local zip64 field, plain central record', async () => {
  const { info } = await read('py-zip64.zip');
  for (const e of info.entries) {
    assert.equal(e.local.compressedSize, 0xffffffff);
    assert.equal(e.local.uncompressedSize, 0xffffffff);
    assert.equal(e.local.versionNeeded, 45);
    assert.deepEqual(e.zip64, {
      uncompressedSize: false,
      compressedSize: false,
      localHeaderOffset: false,
      diskStart: false,
    });
    assert.equal(e.descriptor, undefined);
  }
});

test('py-stream.zip: streaming writes → signed descriptors, 64-bit for the forced-zip64 entry', async () => {
  const { info } = await read('py-stream.zip');
  assert.deepEqual(
    info.entries.map((e) => [e.name, e.flags & ZIP_FLAG_DESCRIPTOR, e.descriptor]),
    [
      ['s/one.dll', 8, { signature: true, zip64: false, length: 16 }],
      ['s/two.txt', 8, { signature: true, zip64: true, length: 24 }],
      ['s/été.txt', 8, { signature: true, zip64: false, length: 16 }],
    ],
  );
  for (const e of info.entries) {
    assert.equal(e.local.crc32, 0, 'CRC deferred to the descriptor');
    assert.equal(e.end, e.dataOffset + e.compressedSize + e.descriptor!.length);
  }
  assert.equal(info.entries[1]!.local.compressedSize, 0xffffffff);
});

test('py-many.zip: 70000 entries → zip64 end record, EOCD count is the sentinel', async () => {
  const { info } = await read('py-many.zip');
  assert.equal(info.entries.length, 70000);
  assert.ok(info.zip64);
  assert.equal(info.zip64.totalEntries, 70000);
  assert.equal(info.eocd.totalEntries, 0xffff);
  assert.equal(info.eocd.centralDirectoryOffset, info.centralDirectoryOffset, 'offset fits, kept literal');
  assert.equal(info.entries[69999]!.name, 'm/69999');
  const names = python(
    'import sys, zipfile; sys.stdout.write("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))',
    [samples.get('py-many.zip')!],
  ).toString();
  assert.equal(names, info.entries.map((e) => e.name).join('\n'));
});

test(
  'zip-fz.zip (zip -fz): central zip64 uncompressed size, zip64 end record with a sentinel offset',
  { skip: ZIP_SKIP },
  async () => {
    const { info } = await read('zip-fz.zip');
    assert.ok(info.zip64);
    assert.equal(info.eocd.centralDirectoryOffset, 0xffffffff);
    for (const e of info.entries.filter((x) => !x.isDirectory)) {
      assert.equal(e.zip64.uncompressedSize, true);
      assert.equal(e.zip64.compressedSize, false);
    }
  },
);

test(
  'zip-pipe.zip (zip to a pipe): descriptors, UT extra field differs between local and central',
  { skip: ZIP_SKIP },
  async () => {
    const { info } = await read('zip-pipe.zip');
    const files = info.entries.filter((e) => !e.isDirectory);
    assert.ok(files.length >= 3);
    for (const e of files) {
      assert.ok(e.descriptor, `${e.name} has a descriptor`);
      assert.notDeepEqual(Buffer.from(e.local.extra), Buffer.from(e.extra), 'UT local carries atime too');
    }
  },
);

test(
  'zip-stdin.zip (zip - from stdin): local zip64 field with real sizes, plain central record',
  { skip: ZIP_SKIP },
  async () => {
    const { info } = await read('zip-stdin.zip');
    const [e] = info.entries;
    assert.equal(e!.name, '-');
    assert.equal(e!.local.compressedSize, 0xffffffff);
    assert.equal(e!.zip64.compressedSize, false);
  },
);

test('names without flag bit 11 decode as CP437, as Python does', () => {
  const high = Uint8Array.from({ length: 128 }, (_, i) => 0x80 + i);
  assert.equal(
    decodeCp437(high),
    python('import sys; sys.stdout.buffer.write(bytes(range(128,256)).decode("cp437").encode())').toString(),
  );
});

test('an empty archive (EOCD only) reads with no entries', async () => {
  const info = await readZip(new BufferSource(rawZip({ entries: [] })));
  assert.equal(info.entries.length, 0);
  assert.equal(info.fileSize, 22);
});

test('a zip whose central order differs from the local order reads, entries in central order', async () => {
  const enc = new TextEncoder();
  const bytes = rawZip({
    entries: [
      { name: 'first', content: enc.encode('1') },
      { name: 'second', content: enc.encode('22') },
    ],
    centralOrder: [1, 0],
  });
  const info = await readZip(new BufferSource(bytes));
  assert.deepEqual(
    info.entries.map((e) => [e.index, e.name, e.localHeaderOffset]),
    [
      [0, 'second', 36],
      [1, 'first', 0],
    ],
  );
});

test('the reader reads only the metadata: bytes read are a small part of a large stored entry', async () => {
  let read = 0;
  const bytes = rawZip({ entries: [{ name: 'big.bin', content: new Uint8Array(4 << 20) }] });
  const inner = new BufferSource(bytes);
  await readZip({
    size: inner.size,
    read: (o, l) => {
      read += l;
      return inner.read(o, l);
    },
  });
  assert.ok(read < 70_000, `read ${read} bytes`);
});
