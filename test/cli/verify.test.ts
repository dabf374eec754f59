import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { readMar } from '../../src/formats/mar/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { FileSource } from '../../src/io/byte-source.js';
import { generateDevKeys, loadPemKey, type DevKeys } from '../../src/keys/index.js';
import { MarWriter } from '../../src/mar/writer.js';
import { marSignatureSlots, signWriter } from '../../src/signing/mar-signer.js';
import { PROJECT_ROOT, SHARED_SKIP, peerMar, runCli, tempDir } from '../helpers/env.js';
import { marTestKeys, writeTestMar, type MarTestKey } from '../helpers/mar-keys.js';

const dir = tempDir('marsign-cli-verify-');
let dev: DevKeys;

before(async () => {
  dev = await generateDevKeys(join(dir, 'dev'));
});

test('MAR: right certificates in order exit 0; wrong order exit 1; manipulated exit 1', async () => {
  const [k0, k1, k2] = marTestKeys(dir, [2048, 2048, 2048]) as [MarTestKey, MarTestKey, MarTestKey];
  const multi = await writeTestMar(join(dir, 'multi.mar'), { keys: [k0.key, k1.key, k2.key] });
  const ok = await runCli(['verify', multi, '--mar-cert', k0.certPath, k1.certPath, k2.certPath]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /verification: OK/);
  const order = await runCli([
    'verify',
    multi,
    '--mar-cert',
    k0.certPath,
    k2.certPath,
    k1.certPath,
    '--json',
  ]);
  assert.equal(order.code, 1);
  const doc = JSON.parse(order.stdout);
  assert.equal(doc.ok, false);
  assert.deepEqual(
    doc.mar.signatures.map((s: { valid: boolean }) => s.valid),
    [true, false, false],
  );
  const manipulated = join(dir, 'appended.mar');
  copyFileSync(await writeTestMar(join(dir, 'one.mar'), { keys: [k0.key] }), manipulated);
  appendFileSync(manipulated, 'x');
  const manip = await runCli(['verify', manipulated, '--mar-cert', k0.certPath]);
  assert.equal(manip.code, 1);
  const sha1 = await writeTestMar(join(dir, 'sha1.mar'), { keys: [k1.key], algorithm: 'sha1' });
  const r = await runCli(['verify', sha1, '--mar-cert', k1.pubPath]);
  assert.equal(r.code, 0, r.stdout);
});

test('errors are exit 2: missing file, not a MAR/PE, nothing to verify, malformed MAR', async () => {
  const [k] = marTestKeys(dir, [2048]) as [MarTestKey];
  const missing = await runCli(['verify', join(dir, 'nope.mar'), '--mar-cert', k.certPath]);
  assert.equal(missing.code, 2);
  const text = join(dir, 'x.txt');
  writeFileSync(text, 'hello world');
  const unknown = await runCli(['verify', text, '--mar-cert', k.certPath]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /UNKNOWN_FORMAT/);
  const nothing = await runCli(['verify', await writeTestMar(join(dir, 'signed.mar'), { keys: [k.key] })]);
  assert.equal(nothing.code, 2);
  assert.match(nothing.stderr, /NOTHING_TO_VERIFY/);
  const collide = await runCli([
    'verify',
    join(PROJECT_ROOT, 'fixtures/mar/bad/MAR_ENTRY_OVERLAP.mar'),
    '--mar-cert',
    k.certPath,
    '--json',
  ]);
  assert.equal(collide.code, 2);
  assert.equal(JSON.parse(collide.stdout).error.name, 'FormatError');
});

/** A MAR signed with the dev MAR key holding PE entries (xz with BCJ, bz2, stored) and a text file. */
async function innerMar(name: string, pes: Record<string, Uint8Array>): Promise<string> {
  const out = join(dir, name);
  const key = loadPemKey(readFileSync(dev.marKey));
  const w = await MarWriter.create(out, {
    productInfo: { channel: 'test', version: '1.0' },
    signatureSlots: marSignatureSlots([key], 'sha384'),
  });
  let i = 0;
  for (const [n, data] of Object.entries(pes)) {
    const raw = join(dir, `raw-${i}`);
    writeFileSync(raw, data);
    const stored =
      i % 3 === 0
        ? execFileSync('xz', ['--x86', '--lzma2=preset=6', '--check=crc64', '-c', raw])
        : i % 3 === 1
          ? execFileSync('bzip2', ['-9', '-c', raw])
          : data;
    await w.addEntry(n, 0o755, stored);
    i++;
  }
  await w.addEntry('readme.txt', 0o644, new TextEncoder().encode('not a PE'));
  await w.finish();
  await signWriter(w, [key], 'sha384');
  await w.commit();
  return out;
}

async function signedPe(name: string, arch: 'x86' | 'x64'): Promise<Uint8Array> {
  const f = join(dir, `${name}.in`);
  writeFileSync(f, buildPe({ arch, name }));
  const r = await runCli(['sign-pe', f, '-o', `${f}.signed`, '--profile', 'dev', '--config', dev.config]);
  assert.equal(r.code, 0, r.stderr);
  return readFileSync(`${f}.signed`);
}

test('MAR --ca verifies every inner PE (xz, bz2, stored); an unsigned one fails unless skipped', async () => {
  const a = await signedPe('a', 'x86');
  const b = await signedPe('b', 'x64');
  const c = await signedPe('c', 'x64');
  const good = await innerMar('good.mar', { 'bin/a.exe': a, 'b.dll': b, 'sub/c.dll': c });
  const r = await runCli(['verify', good, '--ca', dev.caCert, '--mar-cert', dev.marCertDer, '--json']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.deepEqual(
    doc.inner.map((e: { name: string; valid: boolean }) => [e.name, e.valid]),
    [
      ['bin/a.exe', true],
      ['b.dll', true],
      ['sub/c.dll', true],
    ],
  );
  assert.equal(doc.mar.valid, true);

  const unsigned = buildPe({ arch: 'x86', kind: 'dll', name: 'vendor' });
  const bad = await innerMar('bad.mar', { 'bin/a.exe': a, 'vendor.dll': unsigned });
  const r2 = await runCli(['verify', bad, '--ca', dev.caCert]);
  assert.equal(r2.code, 1, r2.stdout);
  assert.match(r2.stdout, /vendor\.dll: not signed/);
  const r3 = await runCli(['verify', bad, '--ca', dev.caCert, '--skip', 'vendor.dll']);
  assert.equal(r3.code, 0, r3.stdout);
  // --inner without --ca checks digest and signature, not the chain.
  const r4 = await runCli(['verify', good, '--inner', '--mar-cert', dev.marCert]);
  assert.equal(r4.code, 0, r4.stdout);
  assert.match(r4.stdout, /chain not checked/);
});

test(
  'complete.mar: MAR signature valid, but its inner exe0.exe is unsigned, so --ca fails',
  { skip: SHARED_SKIP },
  async () => {
    const cert = peerMar('firefox-updater/xpcshellCertificate.der');
    const r = await runCli(['verify', peerMar('firefox-updater/complete.mar'), '--mar-cert', cert]);
    assert.equal(r.code, 0, r.stdout);
    const r2 = await runCli([
      'verify',
      peerMar('firefox-updater/complete.mar'),
      '--mar-cert',
      cert,
      '--ca',
      dev.caCert,
      '--json',
    ]);
    assert.equal(r2.code, 1);
    const doc = JSON.parse(r2.stdout);
    assert.equal(doc.mar.valid, true);
    assert.ok(doc.inner.some((e: { name: string; valid: boolean }) => e.name === 'exe0.exe' && !e.valid));
  },
);

test('MAR --ca with a corrupt entry: MAR signature reported invalid first, the entry invalid by name, the rest checked, exit 1', async () => {
  const a = await signedPe('corrupt-a', 'x86');
  const b = await signedPe('corrupt-b', 'x64');
  const c = await signedPe('corrupt-c', 'x64');
  // i % 3: a.exe xz, b.dll bzip2, c.dll stored
  const good = await innerMar('corrupt.mar', { 'a.exe': a, 'b.dll': b, 'c.dll': c });
  const bytes = readFileSync(good);
  const src = await FileSource.open(good);
  const info = await readMar(src);
  await src.close();
  const [xzEntry, bzEntry] = info.entries;
  const corrupt = Buffer.from(bytes);
  for (const e of [xzEntry!, bzEntry!]) corrupt[e.offset + (e.size >> 1)]! ^= 0xff;
  const path = join(dir, 'corrupt-entries.mar');
  writeFileSync(path, corrupt);

  const r = await runCli(['verify', path, '--ca', dev.caCert, '--mar-cert', dev.marCertDer, '--json']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.ok, false);
  assert.equal(doc.status, 'invalid');
  assert.equal(doc.mar.valid, false);
  assert.deepEqual(
    doc.mar.signatures.map((s: { status: string }) => s.status),
    ['invalid'],
  );
  const entries = doc.entries as { name: string; status: string; error?: { code: string } }[];
  assert.deepEqual(
    entries.map((e) => [e.name, e.status]),
    [
      ['a.exe', 'invalid'],
      ['b.dll', 'invalid'],
      ['c.dll', 'ok'],
      ['readme.txt', 'not checked'],
    ],
  );
  assert.equal(entries[0]!.error?.code, 'CODEC_CORRUPT');
  assert.equal(entries[1]!.error?.code, 'CODEC_CORRUPT');
  assert.deepEqual(
    doc.inner.map((e: { name: string; valid: boolean }) => [e.name, e.valid]),
    [['c.dll', true]],
  );

  const plain = await runCli(['verify', path, '--ca', dev.caCert, '--mar-cert', dev.marCertDer]);
  assert.equal(plain.code, 1, plain.stdout + plain.stderr);
  const lines = plain.stdout.split('\n');
  assert.match(lines[0]!, /MAR signature 0 \(algorithm id 2\): INVALID$/);
  assert.match(lines[1]!, /^ {2}a\.exe: INVALID \(CODEC_CORRUPT: /);
  assert.match(lines[2]!, /^ {2}b\.dll: INVALID \(CODEC_CORRUPT: /);
  assert.match(lines[3]!, /^ {2}c\.dll: digest ok, signature ok, chain ok, no timestamp/);
  assert.match(plain.stdout, /not checked: 1 entry is not a PE/);
  assert.match(plain.stdout, /verification: FAILED$/m);

  // Without --mar-cert the MAR signatures are said to be unchecked; the corrupt entries still fail.
  const noCert = await runCli(['verify', path, '--ca', dev.caCert]);
  assert.equal(noCert.code, 1, noCert.stdout + noCert.stderr);
  assert.match(noCert.stdout, /MAR signatures not checked \(no --mar-cert given\)/);
  assert.match(noCert.stdout, /not checked: MAR signatures: no --mar-cert given/);
  assert.match(noCert.stdout, /b\.dll: INVALID \(CODEC_CORRUPT/);
});
