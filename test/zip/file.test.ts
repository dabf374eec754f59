/**
 * The zip I/O layer on the sample release's target.zip: a rewrite that Authenticode-signs every PE entry
 * (the issue's checks at this layer: unzip -t, zipinfo -v metadata, Python, osslsigncode verify, unmatched
 * entries' compressed bytes), safe extraction, and the fixture generator's determinism.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { BufferSource } from '../../src/io/byte-source.js';
import { readEntryData, readEntrySpan, readZip } from '../../src/formats/zip/index.js';
import { isPe, signPe } from '../../src/signing/authenticode.js';
import { extractZip, openZip, readEntryContent, rewriteZip } from '../../src/zip/index.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';
import { makePki, osslOk, osslVerify } from '../helpers/pki.js';
import { pyDump, unzipTest, zipinfoEntries } from '../formats/zip/tools.js';
import { localeFiles, writeTargetZip } from '../../scripts/make-fixtures.js';

const TARGET = join(PROJECT_ROOT, 'fixtures', 'release', 'target.zip');

test('fixtures/release/target.zip is what scripts/make-fixtures.ts writes, with the en-US MAR PE bytes', async () => {
  const out = join(tempDir(), 'target.zip');
  await writeTargetZip(out);
  assert.deepEqual(await readFile(out), await readFile(TARGET), 'regenerate with --zip-only');
  const z = await openZip(TARGET);
  try {
    const en = new Map(localeFiles('en-US').map((f) => [`firefox/${f.name}`, f.data]));
    const pes = z.info.entries.filter((e) => en.has(e.name) && isPe(en.get(e.name)!));
    assert.ok(pes.length >= 4);
    for (const e of z.info.entries.filter((x) => en.has(x.name)))
      assert.deepEqual(new Uint8Array(await readEntryContent(z.source, e)), en.get(e.name));
    assert.ok(
      z.info.entries.some((e) => e.method === 0 && en.has(e.name) && isPe(en.get(e.name)!)),
      'a stored PE',
    );
    assert.ok(z.info.entries.filter((e) => e.descriptor).length >= 2, 'data descriptors');
  } finally {
    await z.close();
  }
});

test('signing every PE of target.zip: unzip -t, zipinfo -v, Python, osslsigncode verify; other entries byte-identical', async () => {
  const dir = tempDir();
  const pki = makePki({ dir: tempDir() });
  const out = join(dir, 'signed.zip');
  const r = await rewriteZip(TARGET, out, (_, content) =>
    isPe(content)
      ? signPe(content, {
          key: pki.key,
          certChainDer: pki.chainDer,
          digest: 'sha256',
          programName: 'marsign zip test',
        })
      : undefined,
  );
  assert.deepEqual(r.replaced.sort(), [
    'firefox/firefox.exe',
    'firefox/uninstall/helper.exe',
    'firefox/updater.exe',
    'firefox/xul.dll',
  ]);

  const t = unzipTest(out);
  assert.ok(t.ok, t.output);

  const zi = zipinfoEntries(TARGET);
  const zo = zipinfoEntries(out);
  assert.equal(zo.header, zi.header);
  const names = r.input.entries.map((e) => e.name);
  for (const [i, block] of zo.entries.entries()) {
    if (r.replaced.includes(names[i]!)) {
      const strip = (s: string): string =>
        s
          .replace(/32-bit CRC value \(hex\):.*\n/, '')
          .replace(/ compressed size:.*\n/, '')
          .replace(/uncompressed size:.*\n/, '');
      assert.equal(strip(block), strip(zi.entries[i]!), names[i]);
    } else assert.equal(block, zi.entries[i], names[i]);
  }

  assert.deepEqual(
    pyDump([out])[out]!.entries.map((e) => e.name),
    names,
  );

  const before = new BufferSource(await readFile(TARGET));
  const after = new BufferSource(await readFile(out));
  const inInfo = await readZip(before);
  const outInfo = await readZip(after);
  const ext = join(dir, 'x');
  await extractZip(out, ext);
  for (const [i, e] of outInfo.entries.entries()) {
    const old = inInfo.entries[i]!;
    if (!r.replaced.includes(e.name)) {
      assert.deepEqual(await readEntryData(after, e), await readEntryData(before, old), e.name);
      assert.deepEqual(await readEntrySpan(after, e), await readEntrySpan(before, old), e.name);
      continue;
    }
    const v = await osslVerify(join(ext, ...e.name.split('/')), pki.caPemPath);
    assert.ok(osslOk(v), `${e.name}: ${v.output}`);
    assert.equal(e.method, old.method, 'stored stays stored, deflate stays deflate');
    assert.deepEqual(e.descriptor, old.descriptor);
  }
});

test('extractZip writes files and directories with their modes, like unzip', async () => {
  const dest = join(tempDir(), 'out');
  const r = await extractZip(TARGET, dest);
  assert.equal(r.files.length, 12);
  const ref = join(tempDir(), 'ref');
  execFileSync('unzip', ['-q', TARGET, '-d', ref]);
  const walk = (d: string, base = ''): string[] =>
    readdirSync(d)
      .sort()
      .flatMap((n) =>
        statSync(join(d, n)).isDirectory()
          ? [`${base}${n}/`, ...walk(join(d, n), `${base}${n}/`)]
          : [`${base}${n}`],
      );
  assert.deepEqual(walk(dest), walk(ref));
  for (const f of walk(ref).filter((n) => !n.endsWith('/'))) {
    assert.deepEqual(readFileSync(join(dest, f)), readFileSync(join(ref, f)), f);
    assert.equal(statSync(join(dest, f)).mode & 0o777, statSync(join(ref, f)).mode & 0o777, f);
  }
});

test('extractZip refuses a destination that is not empty and a symlink in the way', async () => {
  const d = tempDir();
  writeFileSync(join(d, 'file'), 'x');
  await assert.rejects(extractZip(TARGET, d), { code: 'DEST_NOT_EMPTY' });
  const link = join(tempDir(), 'link');
  symlinkSync(tempDir(), link);
  assert.ok(lstatSync(link).isSymbolicLink());
  await assert.rejects(extractZip(TARGET, link), { code: 'DEST_NOT_EMPTY' });
  assert.equal(existsSync(join(d, 'firefox')), false);
});
