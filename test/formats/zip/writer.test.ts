import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { before, test } from 'node:test';
import { crc32, deflateRawSync } from 'node:zlib';
import { FormatError } from '../../../src/errors.js';
import { BufferSource, type ByteSource } from '../../../src/io/byte-source.js';
import {
  ZIP_METHOD_DEFLATE,
  encodeEnd,
  endTemplateOf,
  newZipEntry,
  readEntryData,
  readEntrySpan,
  readZip,
  zipLayout,
  type ZipEntry,
  type ZipInfo,
} from '../../../src/formats/zip/index.js';
import { ZipWriter, createZip, readEntryContent, rewriteZip } from '../../../src/zip/index.js';
import { tempDir } from '../../helpers/env.js';
import { concat, rawZip } from './raw-zip.js';
import {
  PY_SAMPLES,
  ZIP_SAMPLES,
  ZIP_SKIP,
  pyDump,
  unzipTest,
  writePythonSamples,
  writeZipCliSamples,
  zipinfoEntries,
} from './tools.js';

const dir = tempDir();
const samples = new Map<string, string>();
before(() => {
  for (const p of writePythonSamples(dir)) samples.set(basename(p), p);
  if (!ZIP_SKIP) for (const p of writeZipCliSamples(dir)) samples.set(basename(p), p);
});

const enc = new TextEncoder();
const load = async (path: string): Promise<{ info: ZipInfo; src: BufferSource; bytes: Uint8Array }> => {
  const bytes = new Uint8Array(await readFile(path));
  const src = new BufferSource(bytes);
  return { info: await readZip(src), src, bytes };
};

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return (e as FormatError).code;
  }
  assert.fail('expected an error');
}

const SEEDS: Record<string, Uint8Array> = {
  'raw-deflate-descriptor.zip': rawZip({
    entries: [
      { name: 'a.txt', content: enc.encode('hello'), method: 8, descriptor: {} },
      { name: 'b/', externalAttributes: 0o40755 * 0x10000 },
      { name: 'b/c.bin', content: new Uint8Array(3000).fill(9), method: 8, descriptor: { signature: false } },
      {
        name: 'd.bin',
        content: enc.encode('zip64'),
        zip64: { local: true, central: ['uncompressedSize', 'compressedSize', 'localHeaderOffset'] },
      },
      { name: 'e.bin', content: enc.encode('z64 descriptor'), descriptor: { zip64: true } },
    ],
    comment: enc.encode('seed'),
  }),
  'raw-zip64-end-sentinels.zip': rawZip({
    entries: [{ name: 'x', content: enc.encode('x') }],
    zip64End: { sentinels: true, extensible: enc.encode('ext-data') },
  }),
  'raw-central-order.zip': rawZip({
    entries: [
      { name: 'first', content: enc.encode('1') },
      { name: 'second', content: enc.encode('22'), method: 8 },
    ],
    centralOrder: [1, 0],
  }),
};

test('an unchanged rewrite of every sample is byte-identical to the input', async () => {
  const inputs: string[] = [...samples.values()];
  for (const [name, bytes] of Object.entries(SEEDS)) {
    const p = join(dir, name);
    await writeFile(p, bytes);
    inputs.push(p);
  }
  assert.ok(inputs.length >= (ZIP_SKIP ? 9 : 14));
  for (const p of inputs) {
    const out = join(tempDir(), 'same.zip');
    // py-many.zip's 70000 entries are copied undecoded (the reader tests decode them).
    const r = await rewriteZip(p, out, () => undefined, { select: () => !p.endsWith('py-many.zip') });
    assert.deepEqual(r.replaced, []);
    assert.ok(
      Buffer.from(await readFile(out)).equals(await readFile(p)),
      `${basename(p)} rewritten unchanged differs`,
    );
  }
});

/** New content for an entry: the old one with a tail, so CRC and both sizes change. */
const grow = (c: Uint8Array): Uint8Array =>
  concat([c, enc.encode('\n-- signed by marsign test --\n'), c.subarray(0, 500)]);

function stripReplaced(block: string): string {
  return block
    .replace(/32-bit CRC value \(hex\):.*\n/, '')
    .replace(/ compressed size:.*\n/, '')
    .replace(/uncompressed size:.*\n/, '')
    .replace(/(ID 0x0001 \(PKWARE 64-bit sizes\) and \d+ data bytes:)\n(\s+[0-9a-f ]+\.\n)+/, '$1\n');
}

for (const name of [...PY_SAMPLES.filter((n) => n !== 'py-many.zip'), ...ZIP_SAMPLES]) {
  const skip = name.startsWith('zip-') ? ZIP_SKIP : undefined;
  test(
    `${name}: one replaced entry → unzip -t ok, zipinfo metadata unchanged but its CRC/sizes, Python reads all, other entries byte-identical`,
    { skip },
    async () => {
      const input = samples.get(name)!;
      const before = await load(input);
      const target = before.info.entries.find((e) => !e.isDirectory)!;
      const out = join(tempDir(), `${name}.out.zip`);
      let newContent: Uint8Array | undefined;
      const r = await rewriteZip(input, out, (e, c) =>
        e === target || e.name === target.name ? (newContent = grow(c)) : undefined,
      );
      assert.deepEqual(r.replaced, [target.name]);

      const t = unzipTest(out);
      assert.ok(t.ok, t.output);

      const zi = zipinfoEntries(input);
      const zo = zipinfoEntries(out);
      assert.equal(zo.header, zi.header);
      assert.equal(zo.entries.length, zi.entries.length);
      for (const [i, block] of zo.entries.entries()) {
        const isTarget = before.info.entries[i]!.name === target.name;
        if (isTarget) {
          assert.notEqual(block, zi.entries[i], 'the replaced entry changed');
          assert.equal(stripReplaced(block), stripReplaced(zi.entries[i]!), 'only CRC and sizes changed');
        } else assert.equal(block, zi.entries[i], `zipinfo -v of ${before.info.entries[i]!.name}`);
      }

      const py = pyDump([out])[out]!;
      assert.deepEqual(
        py.entries.map((e) => e.name),
        before.info.entries.map((e) => e.name),
      );
      const after = await load(out);
      for (const [i, e] of after.info.entries.entries()) {
        const old = before.info.entries[i]!;
        if (old.name === target.name) {
          assert.deepEqual(await readEntryContent(after.src, e), newContent);
          assert.equal(e.local.length, old.local.length, 'same local header layout');
          assert.deepEqual(e.descriptor, old.descriptor);
          continue;
        }
        assert.deepEqual(
          await readEntryData(after.src, e),
          await readEntryData(before.src, old),
          `${e.name} compressed bytes`,
        );
        assert.deepEqual(
          await readEntrySpan(after.src, e),
          await readEntrySpan(before.src, old),
          `${e.name} header + data + descriptor`,
        );
      }
    },
  );
}

test('read(write(x)): createZip entries read back with every field as given', async () => {
  const mtime = new Date(Date.UTC(2024, 1, 29, 23, 59, 58));
  const files = [
    { name: 'firefox/', mtime },
    { name: 'firefox/firefox.exe', data: new Uint8Array(20000).fill(0x4d), mode: 0o755, mtime },
    { name: 'firefox/omni.ja', data: enc.encode('stored bytes'), method: 0 as const, mtime },
    {
      name: 'firefox/größe.txt',
      data: enc.encode('utf-8 name'),
      descriptor: true,
      comment: enc.encode('c'),
      mtime,
    },
    {
      name: 'firefox/x.dat',
      data: new Uint8Array(0),
      extra: new Uint8Array([0xfe, 0xca, 2, 0, 1, 2]),
      mtime,
    },
  ];
  const out = join(tempDir(), 'new.zip');
  const w = await createZip(out, files, { comment: enc.encode('made by marsign') });
  const { info, src } = await load(out);
  assert.equal(info.fileSize, w.fileSize);
  assert.equal(Buffer.from(info.comment).toString(), 'made by marsign');
  assert.deepEqual(
    info.entries.map((e) => [
      e.name,
      e.method,
      e.utf8,
      e.isDirectory,
      (e.externalAttributes >>> 16).toString(8),
      !!e.descriptor,
    ]),
    [
      ['firefox/', 0, false, true, '40755', false],
      ['firefox/firefox.exe', 8, false, false, '100755', false],
      ['firefox/omni.ja', 0, false, false, '100644', false],
      ['firefox/größe.txt', 8, true, false, '100644', true],
      ['firefox/x.dat', 8, false, false, '100644', false],
    ],
  );
  for (const [i, e] of info.entries.entries()) {
    assert.equal(e.dosDate, (44 << 9) | (2 << 5) | 29);
    assert.equal(e.dosTime, (23 << 11) | (59 << 5) | 29);
    assert.deepEqual(await readEntryContent(src, e), files[i]!.data ?? new Uint8Array(0));
  }
  assert.deepEqual([...info.entries[4]!.extra], [0xfe, 0xca, 2, 0, 1, 2]);
  assert.deepEqual([...info.entries[3]!.comment], [0x63]);
  assert.ok(unzipTest(out).ok);
  const py = pyDump([out])[out]!;
  assert.deepEqual(
    py.entries.map((e) => e.name),
    files.map((f) => f.name),
  );
});

test('createZip is deterministic', async () => {
  const files = [{ name: 'a.txt', data: enc.encode('same') }];
  const a = join(tempDir(), 'a.zip');
  const b = join(tempDir(), 'b.zip');
  await createZip(a, files);
  await createZip(b, files);
  assert.deepEqual(await readFile(a), await readFile(b));
});

test('zipLayout predicts the writer: offsets, size, and bytes assembled in memory equal the file', async () => {
  const input = SEEDS['raw-deflate-descriptor.zip']!;
  const src = new BufferSource(input);
  const info = await readZip(src);
  const replaced = new Map<string, Uint8Array>([
    ['a.txt', enc.encode('hello, replaced and longer')],
    ['d.bin', enc.encode('zip64 entry replaced')],
    ['e.bin', enc.encode('descriptor zip64 entry replaced')],
  ]);
  const outputs: { entry: ZipEntry; data: Uint8Array; content?: Uint8Array }[] = [];
  for (const e of info.entries) {
    const c = replaced.get(e.name);
    if (!c) outputs.push({ entry: e, data: await readEntrySpan(src, e) });
    else
      outputs.push({
        entry: e,
        content: c,
        data: e.method === ZIP_METHOD_DEFLATE ? new Uint8Array(deflateRawSync(c)) : c,
      });
  }
  const layout = zipLayout(
    outputs.map((o) =>
      o.content
        ? {
            entry: o.entry,
            replacement: {
              crc32: crc32(o.content),
              compressedSize: o.data.length,
              uncompressedSize: o.content.length,
            },
          }
        : { entry: o.entry },
    ),
    endTemplateOf(info),
  );
  const out = join(tempDir(), 'layout.zip');
  const w = await ZipWriter.create(out, { end: endTemplateOf(info) });
  for (const o of outputs) {
    const p = o.content
      ? await w.addEntry(o.entry, o.data, { crc32: crc32(o.content), uncompressedSize: o.content.length })
      : await w.addEntry(o.entry, o.data);
    assert.equal(p.offset, layout.entries[outputs.indexOf(o)]!.offset);
  }
  const result = await w.finish();
  await w.commit();
  assert.equal(result.fileSize, layout.fileSize);
  assert.equal(result.centralDirectoryOffset, layout.centralDirectoryOffset);
  const assembled = concat([
    ...layout.entries.flatMap((p, i) =>
      p.localHeader
        ? [p.localHeader, outputs[i]!.data, p.descriptor ?? new Uint8Array(0)]
        : [outputs[i]!.data],
    ),
    layout.tail,
  ]);
  const written = new Uint8Array(await readFile(out));
  assert.deepEqual(written, assembled);
  const back = await readZip(new BufferSource(written));
  for (const e of back.entries) {
    const c = replaced.get(e.name);
    if (c) assert.deepEqual(await readEntryContent(new BufferSource(written), e), c);
  }
  // Forms kept: zip64 sentinels in the replaced d.bin's local and central records; descriptors as they were.
  const d = back.entries.find((e) => e.name === 'd.bin')!;
  assert.equal(d.local.compressedSize, 0xffffffff);
  assert.deepEqual(d.zip64, info.entries.find((e) => e.name === 'd.bin')!.zip64);
  assert.deepEqual(
    back.entries.map((e) => e.descriptor),
    info.entries.map((e) => e.descriptor),
  );
  assert.ok(unzipTest(out).ok, unzipTest(out).output);
});

/** A file of `size` bytes with `parts` written at their offsets and holes elsewhere (sparse on disk). */
async function sparseFile(path: string, size: number, parts: [number, Uint8Array][]): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    for (const [at, b] of parts) await fh.write(b, 0, b.length, at);
  } finally {
    await fh.close();
  }
}

test('sizes and offsets past 4 GiB get zip64 forms (local, central, descriptor, end records); zipinfo and Python read them', async () => {
  const big = 5 * 2 ** 30;
  const a = newZipEntry({ name: 'big.bin', method: 0, descriptor: true }, 0);
  const b = newZipEntry({ name: 'after.txt', method: 0 }, 1);
  const bContent = enc.encode('after the 5 GiB entry');
  const layout = zipLayout(
    [
      { entry: a, replacement: { crc32: 0x12345678, compressedSize: big, uncompressedSize: big } },
      {
        entry: b,
        replacement: {
          crc32: crc32(bContent),
          compressedSize: bContent.length,
          uncompressedSize: bContent.length,
        },
      },
    ],
    { comment: new Uint8Array(0) },
  );
  const [pa, pb] = layout.entries as [
    NonNullable<(typeof layout.entries)[0]>,
    NonNullable<(typeof layout.entries)[0]>,
  ];
  assert.ok(pb.offset > 2 ** 32);
  const path = join(tempDir(), 'sparse.zip');
  await sparseFile(path, layout.fileSize, [
    [0, pa.localHeader!],
    [pa.localHeader!.length + big, pa.descriptor!],
    [pb.offset, concat([pb.localHeader!, bContent])],
    [layout.centralDirectoryOffset, layout.tail],
  ]);
  const fs = await import('node:fs/promises');
  const fh = await fs.open(path, 'r');
  const source: ByteSource = {
    size: layout.fileSize,
    read: async (o, l) => {
      const buf = Buffer.alloc(l);
      await fh.read(buf, 0, l, o);
      return buf;
    },
  };
  try {
    const info = await readZip(source, { maxEntrySize: 2 ** 33, maxRatio: 2 });
    assert.ok(info.zip64, 'zip64 end record');
    assert.equal(info.eocd.centralDirectoryOffset, 0xffffffff);
    const [ea, eb] = info.entries as [ZipEntry, ZipEntry];
    assert.equal(ea.compressedSize, big);
    assert.deepEqual(ea.zip64, {
      uncompressedSize: true,
      compressedSize: true,
      localHeaderOffset: false,
      diskStart: false,
    });
    assert.deepEqual(ea.descriptor, { signature: true, zip64: true, length: 24 });
    assert.equal(ea.local.compressedSize, 0xffffffff);
    assert.equal(ea.local.versionNeeded, 45);
    assert.equal(eb.localHeaderOffset, pb.offset);
    assert.deepEqual(eb.zip64, {
      uncompressedSize: false,
      compressedSize: false,
      localHeaderOffset: true,
      diskStart: false,
    });
    assert.deepEqual(new Uint8Array(await readEntryContent(source, eb)), bContent);
  } finally {
    await fh.close();
  }
  const zi = execFileSync('zipinfo', ['-v', path], { encoding: 'utf8' });
  assert.match(zi, /compressed size:\s+5368709120 bytes/);
  assert.match(zi, new RegExp(`offset of local header from start of archive:\\s+${pb.offset}`));
  const py = execFileSync(
    'python3',
    [
      '-c',
      'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); print([(i.filename,i.file_size,i.header_offset) for i in z.infolist()]); print(z.read("after.txt").decode())',
      path,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(py, `[('big.bin', 5368709120, 0), ('after.txt', 21, ${pb.offset})]\nafter the 5 GiB entry\n`);
});

test('ZipWriter refuses misuse with typed codes and leaves no file', async () => {
  const d = tempDir();
  const out = join(d, 'w.zip');
  const { info, src } = await load(
    await (async () => {
      const p = join(d, 'in.zip');
      await writeFile(
        p,
        rawZip({
          entries: [
            { name: 'a', content: enc.encode('aaa') },
            { name: 'b', content: enc.encode('b') },
          ],
        }),
      );
      return p;
    })(),
  );
  const [a] = info.entries as [ZipEntry];
  const w = await ZipWriter.create(out);
  assert.equal(
    await codeOf(w.addEntry(a, new Uint8Array(3))),
    'ZIP_WRITER_STATE',
    'an unchanged entry needs its whole span',
  );
  await w.addEntry(a, await readEntrySpan(src, a));
  assert.equal(
    await codeOf(w.addEntry(a, await readEntrySpan(src, a))),
    'ZIP_WRITER_STATE',
    'same entry twice',
  );
  const clash = { ...info.entries[1]!, name: 'a' };
  assert.equal(
    await codeOf(w.addEntry(clash, await readEntrySpan(src, info.entries[1]!))),
    'ZIP_DUPLICATE_NAME',
  );
  assert.equal(
    await codeOf(w.addEntry(info.entries[1]!, enc.encode('xy'), { crc32: 0, uncompressedSize: 3 })),
    'ZIP_STORED_SIZE_MISMATCH',
  );
  await w.finish();
  assert.equal(await codeOf(w.finish()), 'ZIP_WRITER_STATE');
  await w.abort();
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(d).sort(), ['in.zip']);
});

test('a failing transform aborts the rewrite: no output, no temp file', async () => {
  const d = tempDir();
  const input = join(d, 'in.zip');
  await writeFile(input, rawZip({ entries: [{ name: 'a', content: enc.encode('a') }] }));
  await assert.rejects(
    rewriteZip(input, join(d, 'out.zip'), () => {
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.deepEqual(readdirSync(d), ['in.zip']);
});

test('end records: zip64 only where a value needs it or the input had it', () => {
  const none = { comment: new Uint8Array(0) };
  assert.equal(
    encodeEnd(none, { offset: 100, size: 50, entries: 0xffff }).length,
    22,
    '65535 entries fit as a literal',
  );
  assert.equal(encodeEnd(none, { offset: 100, size: 50, entries: 0x10000 }).length, 22 + 56 + 20);
  assert.equal(encodeEnd(none, { offset: 0xffffffff, size: 50, entries: 1 }).length, 22 + 56 + 20);
  const kept = encodeEnd(
    {
      comment: new Uint8Array(0),
      zip64: {
        versionMadeBy: 0x031e,
        versionNeeded: 45,
        extensible: new Uint8Array(3),
        locatorTotalDisks: 1,
      },
    },
    { offset: 100, size: 50, entries: 1 },
  );
  assert.equal(kept.length, 22 + 56 + 3 + 20, 'an input zip64 record is kept, with its extensible data');
});
