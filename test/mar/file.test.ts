import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { BufferSource } from '../../src/io/byte-source.js';
import { readEntryBytes, readMar } from '../../src/formats/mar/index.js';
import { collectInputs, createMar, extractMar, openMar } from '../../src/mar/file.js';
import { MarWriter } from '../../src/mar/writer.js';
import { PROJECT_ROOT, SHARED_SKIP, peerMar, tempDir } from '../helpers/env.js';
import { writeTestMar } from '../helpers/mar-keys.js';

const BAD = join(PROJECT_ROOT, 'fixtures', 'mar', 'bad');

const PIB = { channel: '@MAR_CHANNEL_ID@', version: '13.0a1' };

/** Copies of the libmar input files with mode 0666, as the libmar tests create them. */
function inputs666(names: string[]): string[] {
  const dir = tempDir();
  return names.map((n) => {
    const p = join(dir, n);
    copyFileSync(peerMar(`firefox-libmar/${n}`), p);
    chmodSync(p, 0o666);
    return p;
  });
}

for (const [ref, files] of [
  ['binary_data.mar', ['binary_data_file']],
  ['multiple_file.mar', ['0_sized_file', '1_byte_file', 'binary_data_file']],
  ['0_sized.mar', ['0_sized_file']],
] as const) {
  test(
    `createMar reproduces ${ref} (mar -c, mode 0666, @MAR_CHANNEL_ID@/13.0a1)`,
    { skip: SHARED_SKIP },
    async () => {
      const out = join(tempDir(), ref);
      await createMar(out, inputs666([...files]), { productInfo: PIB });
      assert.deepEqual(await readFile(out), await readFile(peerMar(`firefox-libmar/${ref}`)));
    },
  );
}

const GOOD = [
  'firefox-libmar/0_sized.mar',
  'firefox-libmar/binary_data.mar',
  'firefox-libmar/multiple_file.mar',
  'firefox-libmar/no_pib.mar',
  'firefox-libmar/signed_pib.mar',
  'firefox-libmar/signed_no_pib.mar',
  'firefox-libmar/multiple_signed_pib.mar',
  'firefox-libmar/multiple_signed_pib_2.mar',
  'firefox-updater/complete.mar',
  'firefox-updater/partial.mar',
  'firefox-updater/old_version.mar',
  'build-mar/test-bz2.mar',
  'build-mar/test-xz.mar',
  'generated-mardor/gen-mardor-xz-bcj-x86-unsigned.mar',
];

for (const rel of GOOD) {
  test(`round trip: read ${rel}, rewrite with MarWriter, read back`, { skip: SHARED_SKIP }, async () => {
    const original = new Uint8Array(await readFile(peerMar(rel)));
    const m = await openMar(peerMar(rel));
    const out = join(tempDir(), 'rt.mar');
    try {
      const { info } = m;
      const w = await MarWriter.create(out, {
        ...(info.productInfo ? { productInfo: info.productInfo } : {}),
        signatureSlots: info.signatures.map((s) => ({ algorithmId: s.algorithmId, length: s.length })),
        additionalHeader: info.hasAdditionalHeader || info.style === 'old',
      });
      for (const e of info.entries) await w.addEntry(e.name, e.flags, await readEntryBytes(m.source, e));
      await w.finish();
      await w.setSignatures(info.signatures.map((s) => original.subarray(s.offset, s.offset + s.length)));
      await w.commit();
    } finally {
      await m.close();
    }
    const rewritten = new Uint8Array(await readFile(out));
    const a = await readMar(new BufferSource(original));
    const b = await readMar(new BufferSource(rewritten));
    if (a.style === 'modern' && a.productInfo?.padded !== false) {
      // libmar layout: identical bytes, so the copied signatures still verify.
      assert.deepEqual(rewritten, original);
    } else {
      // Old-style input becomes modern; mardor's exact-size PIB becomes libmar's padded one.
      assert.equal(b.style, 'modern');
      assert.deepEqual(
        b.entries.map((e) => [e.name, e.size, e.flags]),
        a.entries.map((e) => [e.name, e.size, e.flags]),
      );
      for (const [i, e] of a.entries.entries()) {
        const be = b.entries[i]!;
        assert.deepEqual(
          rewritten.subarray(be.offset, be.offset + be.size),
          original.subarray(e.offset, e.offset + e.size),
        );
      }
      assert.deepEqual(b.productInfo && { ...b.productInfo, padded: false }, a.productInfo);
    }
  });
}

test(
  'extract --decompress: complete.mar exe0.exe equals `xz -dc` of the stored entry (a PE, 0755)',
  { skip: SHARED_SKIP },
  async () => {
    const dir = tempDir();
    const dest = join(dir, 'out');
    const r = await extractMar(peerMar('firefox-updater/complete.mar'), dest, { decompress: true });
    assert.equal(r.files.length, 21);
    const exe = await readFile(join(dest, 'exe0.exe'));
    assert.equal(exe.length, 79872);
    assert.equal(exe.subarray(0, 2).toString('latin1'), 'MZ');
    assert.equal(statSync(join(dest, 'exe0.exe')).mode & 0o777, 0o755);
    assert.equal(statSync(join(dest, 'precomplete')).mode & 0o777, 0o644);
    const m = await openMar(peerMar('firefox-updater/complete.mar'));
    try {
      const raw = await readEntryBytes(
        m.source,
        m.info.entries.find((e) => e.name === '0/0exe0.exe')!,
      );
      assert.deepEqual(
        execFileSync('xz', ['-dc'], { input: raw }),
        await readFile(join(dest, '0/0exe0.exe')),
      );
    } finally {
      await m.close();
    }
    assert.deepEqual(readdirSync(dir), ['out'], 'the temp extraction dir was renamed, nothing else left');
  },
);

test('extract without --decompress writes stored bytes (bzip2 -dc reads them), modes kept', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  mkdirSync(join(src, 'Contents'), { recursive: true });
  writeFileSync(join(src, 'update.manifest'), 'type "complete"\n'.repeat(20));
  writeFileSync(join(src, 'Contents', 'update-settings.ini'), '[Settings]\n');
  chmodSync(join(src, 'Contents', 'update-settings.ini'), 0o664);
  const mar = join(dir, 'bz2.mar');
  await createMar(mar, [src], { compression: 'bz2' });
  const dest = join(dir, 'out');
  await extractMar(mar, dest);
  const text = execFileSync('bzip2', ['-dc', join(dest, 'update.manifest')]).toString();
  assert.equal(text, 'type "complete"\n'.repeat(20));
  assert.equal(statSync(join(dest, 'Contents/update-settings.ini')).mode & 0o777, 0o664);
});

test('extract refuses a non-empty destination and an invalid MAR, writing nothing', async () => {
  const dir = tempDir();
  const mar = await writeTestMar(join(tempDir(), 'three.mar'));
  const full = join(dir, 'full');
  mkdirSync(full);
  writeFileSync(join(full, 'keep'), 'x');
  await assert.rejects(extractMar(mar, full), {
    code: 'DEST_NOT_EMPTY',
  });
  await assert.rejects(extractMar(join(BAD, 'MAR_ENTRY_OVERLAP.mar'), join(dir, 'o')), {
    code: 'MAR_ENTRY_OVERLAP',
  });
  assert.deepEqual(readdirSync(dir).sort(), ['full']);
  // An existing empty directory is fine.
  mkdirSync(join(dir, 'empty'));
  await extractMar(mar, join(dir, 'empty'));
  assert.deepEqual(readdirSync(join(dir, 'empty')).sort(), ['a.txt', 'dir']);
  assert.deepEqual(readdirSync(join(dir, 'empty', 'dir')).sort(), ['bin', 'empty']);
});

test('create with xz + x86 filter: `xz -lvv` shows the BCJ chain; extract --decompress restores the files', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  mkdirSync(join(src, 'bin'), { recursive: true });
  const exe = new Uint8Array(200_000).map((_, i) => (i * 7919) % 251);
  writeFileSync(join(src, 'bin', 'app.exe'), exe);
  writeFileSync(join(src, 'readme.txt'), 'hello\n');
  writeFileSync(join(src, 'empty'), '');
  const out = join(dir, 'x.mar');
  const info = await createMar(out, [src], {
    compression: 'xz',
    x86: true,
    productInfo: { channel: 'test', version: '1.0' },
  });
  assert.deepEqual(
    info.entries.map((e) => e.name),
    ['bin/app.exe', 'empty', 'readme.txt'],
  );
  const bytes = await readFile(out);
  const e = info.entries[0]!;
  const xzFile = join(dir, 'entry.xz');
  writeFileSync(xzFile, bytes.subarray(e.offset, e.offset + e.size));
  const listing = execFileSync('xz', ['-lvv', xzFile]).toString();
  assert.match(listing, /--x86/);
  assert.match(listing, /CRC64/);
  const dest = join(dir, 'out');
  await extractMar(out, dest, { decompress: true });
  assert.deepEqual(new Uint8Array(await readFile(join(dest, 'bin/app.exe'))), exe);
  assert.equal((await readFile(join(dest, 'empty'))).length, 0);
  assert.equal(await readFile(join(dest, 'readme.txt'), 'utf8'), 'hello\n');
});

test('create with bz2: entries pass `bzip2 -t`', async () => {
  const dir = tempDir();
  const f = join(dir, 'a.txt');
  writeFileSync(f, 'some text '.repeat(1000));
  const out = join(dir, 'b.mar');
  const info = await createMar(out, [f], { compression: 'bz2' });
  const bytes = await readFile(out);
  const e = info.entries[0]!;
  assert.equal(e.name, 'a.txt');
  const bz = join(dir, 'a.bz2');
  writeFileSync(bz, bytes.subarray(e.offset, e.offset + e.size));
  execFileSync('bzip2', ['-t', bz]);
});

test('createMar failures leave no output file', async () => {
  const dir = tempDir();
  const f = join(dir, 'a.txt');
  writeFileSync(f, 'x');
  const out = join(dir, 'o.mar');
  await assert.rejects(createMar(out, [f, join(dir, 'missing')]), { code: 'ENOENT' });
  await assert.rejects(createMar(out, [f], { productInfo: { channel: 'é', version: '1' } }), {
    code: 'MAR_PRODUCT_INFO_INVALID',
  });
  await assert.rejects(createMar(out, [f, f]), { code: 'MAR_DUPLICATE_NAME' });
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(dir), ['a.txt']);
});

test('collectInputs: relative file paths keep their path, absolute ones their basename, dirs are relative', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'd', 'sub'), { recursive: true });
  writeFileSync(join(dir, 'd', 'sub', 'z'), '');
  writeFileSync(join(dir, 'd', 'a'), '');
  assert.deepEqual(
    (await collectInputs([join(dir, 'd'), join(dir, 'd', 'a')])).map((i) => i.name),
    ['a', 'sub/z', 'a'],
  );
});

test('extract caps the total output (MAR_EXTRACT_TOO_LARGE) and refuses a symlink as destination', async () => {
  const dir = tempDir();
  const mar = await writeTestMar(join(tempDir(), 'three.mar')); // 518 bytes of entries
  await assert.rejects(extractMar(mar, join(dir, 'o'), { maxTotalSize: 100 }), {
    code: 'MAR_EXTRACT_TOO_LARGE',
  });
  assert.deepEqual(readdirSync(dir), []);
  mkdirSync(join(dir, 'real'));
  symlinkSync(join(dir, 'real'), join(dir, 'link'));
  await assert.rejects(extractMar(mar, join(dir, 'link')), {
    code: 'DEST_NOT_EMPTY',
  });
  assert.deepEqual(readdirSync(join(dir, 'real')), []);
});

test('collectInputs keeps a safe relative path as the entry name', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'f.txt'), 'x');
  const prev = process.cwd();
  process.chdir(dir);
  try {
    assert.deepEqual(
      (await collectInputs(['sub/f.txt', './sub/f.txt', '../' + basename(dir) + '/sub/f.txt'])).map(
        (i) => i.name,
      ),
      ['sub/f.txt', 'sub/f.txt', 'f.txt'],
    );
  } finally {
    process.chdir(prev);
  }
});
