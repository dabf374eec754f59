/** `marsign mar info|list|extract` on zips, told apart from MARs by content, not by name. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { PROJECT_ROOT, runCli, tempDir } from '../helpers/env.js';

const TARGET = join(PROJECT_ROOT, 'fixtures', 'release', 'target.zip');
const BAD = join(PROJECT_ROOT, 'fixtures', 'zip', 'bad');

test('marsign mar list of a zip prints what zipinfo prints', async () => {
  const r = await runCli(['mar', 'list', TARGET]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, execFileSync('zipinfo', [TARGET], { encoding: 'utf8' }));
});

test('a zip named .mar is read as a zip, a MAR named .zip as a MAR', async () => {
  const d = tempDir();
  const zipAsMar = join(d, 'target.mar');
  copyFileSync(TARGET, zipAsMar);
  const z = await runCli(['mar', 'info', '--json', zipAsMar]);
  assert.equal(z.code, 0, z.stderr);
  assert.equal(JSON.parse(z.stdout).format, 'zip');
  const marAsZip = join(d, 'complete.zip');
  copyFileSync(join(PROJECT_ROOT, 'fixtures', 'release', 'de', 'complete.mar'), marAsZip);
  const m = await runCli(['mar', 'info', '--json', marAsZip]);
  assert.equal(m.code, 0, m.stderr);
  assert.equal(JSON.parse(m.stdout).style, 'modern');
});

test('marsign mar info of a zip: human and --json summaries', async () => {
  const h = await runCli(['mar', 'info', TARGET]);
  assert.equal(h.code, 0, h.stderr);
  assert.match(h.stdout, /^format +zip$/m);
  assert.match(
    h.stdout,
    /^entries +12 \(70100 bytes compressed, 241330 uncompressed; 2 with data descriptors\)$/m,
  );
  assert.match(h.stdout, /^zip64 +no$/m);
  const j = JSON.parse((await runCli(['mar', 'info', '--json', TARGET])).stdout);
  assert.equal(j.fileSize, readFileSync(TARGET).length);
  assert.equal(j.entryCount, 12);
  assert.equal(j.zip64, null);
  assert.equal(j.eocd.totalEntries, 12);
});

test('marsign mar list --json gives every field of every entry; --verbose the layout table', async () => {
  const j = JSON.parse((await runCli(['mar', 'list', '--json', TARGET])).stdout);
  const exe = j.entries.find((e: { name: string }) => e.name === 'firefox/updater.exe');
  assert.equal(exe.methodName, 'defN');
  assert.equal(exe.mode, '-rwxr-xr-x');
  assert.deepEqual(exe.descriptor, { signature: true, zip64: false, length: 16 });
  assert.equal(exe.local.crc32, '00000000', 'CRC deferred to the descriptor');
  assert.equal(exe.modified, '2025-01-01 12:00:00');
  for (const k of [
    'crc32',
    'compressedSize',
    'uncompressedSize',
    'localHeaderOffset',
    'dataOffset',
    'extra',
    'zip64',
    'versionMadeBy',
    'externalAttributes',
  ])
    assert.ok(k in exe, k);
  const v = await runCli(['mar', 'list', '--verbose', TARGET]);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /^OFFSET +CSIZE +SIZE +CRC32 +METHOD +DESC +ZIP64 +EXTRA +NAME$/m);
  assert.match(v.stdout, /^\d+ +\d+ +13312 +[0-9a-f]{8} +defN +sig32 +- +- +firefox\/updater\.exe$/m);
});

test('marsign mar extract of a zip writes what unzip writes', async () => {
  const dest = join(tempDir(), 'out');
  const r = await runCli(['mar', 'extract', '--json', TARGET, dest]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).files.length, 12);
  const ref = join(tempDir(), 'ref');
  execFileSync('unzip', ['-q', TARGET, '-d', ref]);
  for (const f of ['firefox/xul.dll', 'firefox/omni.ja', 'firefox/locale.ini'])
    assert.deepEqual(readFileSync(join(dest, f)), readFileSync(join(ref, f)), f);
});

test('hostile zips: exit 2 with `marsign: CODE: reason`, nothing extracted', async () => {
  const list = await runCli(['mar', 'list', join(BAD, 'ZIP_ENTRY_OVERLAP.zip')]);
  assert.equal(list.code, 2);
  assert.match(
    list.stderr,
    /^marsign: ZIP_ENTRY_OVERLAP: entry "a" .* overlaps "b" at \d+ \(at offset \d+\)$/m,
  );
  const dest = join(tempDir(), 'out');
  const x = await runCli(['mar', 'extract', join(BAD, 'ZIP_CRC_MISMATCH.zip'), dest]);
  assert.equal(x.code, 2);
  assert.match(x.stderr, /^marsign: ZIP_CRC_MISMATCH: /m);
  assert.equal(existsSync(dest), false);
  const lenient = await runCli(['mar', 'list', '--lenient', join(BAD, 'ZIP_BAD_NAME.dotdot.zip')]);
  assert.equal(lenient.code, 0, lenient.stderr);
  assert.match(lenient.stdout, /\.\.\/\.\.\/evil\.sh$/m);
});
