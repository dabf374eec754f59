import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { readMar, signableChunks } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { loadPemKey } from '../../src/keys/index.js';
import { MarWriter } from '../../src/mar/writer.js';
import { marSignatureSlots, signMarFile, signWriter } from '../../src/signing/mar-signer.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { PROJECT_ROOT, SHARED_SKIP, peerMar, tempDir } from '../helpers/env.js';
import { marTestKeys, writeTestMar, type MarTestKey } from '../helpers/mar-keys.js';
import { rawMar } from '../formats/mar/raw-mar.js';

const dir = tempDir('marsign-marsign-');
/** Mozilla's TEST-ONLY keys (../shared), for the byte-for-byte comparisons with Mozilla's signed MARs. */
const key = (n: string) => loadPemKey(readFileSync(peerMar(`keys/${n}.TEST-ONLY.key.pem`)));
const libmar = (n: string) => peerMar(`firefox-libmar/${n}`);
/** Our own throwaway keys for everything else: a 3072-bit one, so slot lengths follow the key. */
const [k0, k1, k2] = marTestKeys(dir, [2048, 2048, 3072]) as [MarTestKey, MarTestKey, MarTestKey];

/** The §8 signed stream of a MAR, written to a file for openssl. */
async function streamOf(path: string): Promise<{ stream: string; sigs: string[] }> {
  const src = await FileSource.open(path);
  try {
    const info = await readMar(src);
    const parts: Uint8Array[] = [];
    for await (const c of signableChunks(src, info)) parts.push(c);
    const stream = `${path}.stream`;
    writeFileSync(stream, Buffer.concat(parts));
    const sigs: string[] = [];
    for (const [i, s] of info.signatures.entries()) {
      const p = `${path}.sig${i}`;
      writeFileSync(p, await src.read(s.offset, s.length));
      sigs.push(p);
    }
    return { stream, sigs };
  } finally {
    await src.close();
  }
}

test(
  'known answer: binary_data.mar + mycert = signed_pib.mar, byte for byte',
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'signed_pib.mar');
    const info = await signMarFile(libmar('binary_data.mar'), out, {
      keys: [key('mycert')],
      algorithm: 'sha384',
    });
    assert.deepEqual(readFileSync(out), readFileSync(libmar('signed_pib.mar')));
    assert.deepEqual(
      info.signatures.map((s) => [s.algorithmId, s.length]),
      [[2, 512]],
    );
  },
);

test(
  'known answer: [mycert, mycert2, mycert3] = multiple_signed_pib.mar; [mycert, mycert, mycert3] = multiple_signed_pib_2.mar',
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'multi.mar');
    await signMarFile(libmar('binary_data.mar'), out, {
      keys: [key('mycert'), key('mycert2'), key('mycert3')],
      algorithm: 'sha384',
    });
    assert.deepEqual(readFileSync(out), readFileSync(libmar('multiple_signed_pib.mar')));
    await signMarFile(libmar('binary_data.mar'), out, {
      keys: [key('mycert'), key('mycert'), key('mycert3')],
      algorithm: 'sha384',
    });
    assert.deepEqual(readFileSync(out), readFileSync(libmar('multiple_signed_pib_2.mar')));
    // Re-signed in place with one key: three signatures replaced by one, exactly signmar's output.
    const f = join(dir, 'resign-peer.mar');
    copyFileSync(libmar('multiple_signed_pib.mar'), f);
    await signMarFile(f, f, { keys: [key('mycert')], algorithm: 'sha384' });
    assert.deepEqual(readFileSync(f), readFileSync(libmar('signed_pib.mar')));
  },
);

test('re-signing replaces existing signatures (count and keys), in place', async () => {
  const unsigned = await writeTestMar(join(dir, 'resign-unsigned.mar'));
  const f = await writeTestMar(join(dir, 'resign.mar'), { keys: [k0.key, k1.key, k2.key] });
  assert.equal((await verifyMar(f, [k0.pubPath, k1.pubPath, k2.pubPath])).valid, true);
  await signMarFile(f, f, { keys: [k0.key], algorithm: 'sha384' });
  const direct = join(dir, 'resign-direct.mar');
  await signMarFile(unsigned, direct, { keys: [k0.key], algorithm: 'sha384' });
  assert.deepEqual(readFileSync(f), readFileSync(direct), 'three signatures replaced by one');
  await signMarFile(f, f, { keys: [k1.key], algorithm: 'sha384' });
  assert.equal((await verifyMar(f, [k1.pubPath])).valid, true);
  assert.equal((await verifyMar(f, [k0.pubPath])).valid, false);
});

test("an old-style MAR gets signmar's layout (no additional-section count) and verifies", async () => {
  const data = new Uint8Array(300).map((_, i) => i & 0xff);
  const old = join(dir, 'old.mar');
  writeFileSync(old, rawMar({ style: 'old', entries: [{ name: 'x/y.bin', data, flags: 0o664 }] }));
  const out = join(dir, 'old-signed.mar');
  const info = await signMarFile(old, out, { keys: [k0.key], algorithm: 'sha384' });
  assert.equal(info.style, 'modern');
  assert.equal(info.hasAdditionalHeader, false);
  assert.equal(info.dataStart, 28 + 256, 'content right after the one 256-byte signature');
  assert.deepEqual(
    info.entries.map((e) => [e.name, e.size, e.flags]),
    [['x/y.bin', 300, 0o664]],
  );
  assert.deepEqual(new Uint8Array(readFileSync(out).subarray(284, 584)), data);
  assert.equal((await verifyMar(out, [k0.pubPath])).valid, true);
});

test(
  "an old-style MAR signed with mycert matches libmar's signed_no_pib.mar but for the mode and the signature",
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'no_pib_signed.mar');
    const info = await signMarFile(libmar('no_pib.mar'), out, { keys: [key('mycert')], algorithm: 'sha384' });
    assert.equal(info.hasAdditionalHeader, false);
    assert.equal(info.dataStart, 540, 'content right after the signature, like signed_no_pib.mar');
    // signed_no_pib.mar was made from a 0666 copy of no_pib.mar (0664): only the mode and the
    // signature differ, so compare everything else.
    const ours = readFileSync(out);
    const theirs = readFileSync(peerMar('firefox-libmar/signed_no_pib.mar'));
    assert.equal(ours.length, theirs.length);
    assert.deepEqual(ours.subarray(0, 28), theirs.subarray(0, 28));
    assert.deepEqual(ours.subarray(540, 1052), theirs.subarray(540, 1052), 'entry data');
    assert.equal((await verifyMar(out, [peerMar('keys/mycert.pub.pem')])).valid, true);
  },
);

/** Re-sign `input` with `newKey`: product information and stored entry bytes are kept, the old key fails. */
async function resignKeeps(input: string, newKey: MarTestKey | string, oldCert: string): Promise<void> {
  const out = join(dir, `resigned-${input.split('/').pop()}`);
  const k = typeof newKey === 'string' ? key(newKey) : newKey.key;
  await signMarFile(input, out, { keys: [k], algorithm: 'sha384' });
  const a = await FileSource.open(input);
  const b = await FileSource.open(out);
  try {
    const ia = await readMar(a);
    const ib = await readMar(b);
    assert.ok(ia.productInfo);
    assert.deepEqual(ib.productInfo, ia.productInfo);
    assert.deepEqual(
      ib.entries.map((e) => [e.name, e.size, e.flags]),
      ia.entries.map((e) => [e.name, e.size, e.flags]),
    );
    for (const [i, e] of ia.entries.entries()) {
      assert.deepEqual(await b.read(ib.entries[i]!.offset, e.size), await a.read(e.offset, e.size), e.name);
    }
  } finally {
    await a.close();
    await b.close();
  }
  const pub = typeof newKey === 'string' ? peerMar(`keys/${newKey}.pub.pem`) : newKey.pubPath;
  assert.equal((await verifyMar(out, [pub])).valid, true);
  // The original signature is gone, so the old certificate no longer verifies.
  assert.equal((await verifyMar(input, [oldCert])).valid, true, 'control: the input verifies with it');
  assert.equal((await verifyMar(out, [oldCert])).valid, false);
}

test('product information is kept; xz entries are copied untouched', async () => {
  const xz = (data: Uint8Array): Uint8Array =>
    new Uint8Array(execFileSync('xz', ['--x86', '--lzma2=preset=6', '--check=crc64', '-c'], { input: data }));
  const entries = [
    { name: 'bin/app.exe', data: xz(new Uint8Array(40_000).map((_, i) => (i * 31) % 251)), flags: 0o755 },
    { name: 'update.manifest', data: xz(new TextEncoder().encode('type "complete"\n')), flags: 0o644 },
  ];
  const input = await writeTestMar(join(dir, 'xz-entries.mar'), {
    keys: [k2.key],
    entries,
    writer: { productInfo: { channel: 'release-test', version: '128.0' } },
  });
  await resignKeeps(input, k0, k2.certPath);
});

test(
  "Mozilla's complete.mar: product information kept, xz entries copied untouched",
  { skip: SHARED_SKIP },
  async () => {
    await resignKeeps(
      peerMar('firefox-updater/complete.mar'),
      'mycert3',
      peerMar('firefox-updater/xpcshellCertificate.der'),
    );
  },
);

test('openssl dgst -verify accepts our signatures over the signed stream (sha384 id 2, sha1 id 1)', async () => {
  const input = await writeTestMar(join(dir, 'openssl-in.mar'));
  for (const [alg, id] of [
    ['sha384', 2],
    ['sha1', 1],
  ] as const) {
    const out = join(dir, `openssl-${alg}.mar`);
    await signMarFile(input, out, {
      keys: [k1.key, k2.key],
      algorithm: alg,
    });
    const src = await FileSource.open(out);
    const info = await readMar(src);
    await src.close();
    assert.deepEqual(
      info.signatures.map((s) => s.algorithmId),
      [id, id],
    );
    const { stream, sigs } = await streamOf(out);
    for (const [i, k] of [k1, k2].entries()) {
      const r = execFileSync('openssl', [
        'dgst',
        `-${alg}`,
        '-verify',
        k.pubPath,
        '-signature',
        sigs[i]!,
        stream,
      ]);
      assert.match(r.toString(), /Verified OK/, `${alg} signature ${i}`);
    }
    assert.throws(() =>
      execFileSync('openssl', ['dgst', `-${alg}`, '-verify', k2.pubPath, '-signature', sigs[0]!, stream], {
        stdio: 'pipe',
      }),
    );
  }
});

test('one pass: MarWriter with marSignatureSlots + signWriter gives a verifiable MAR', async () => {
  const keys = [k0.key, k1.key];
  const out = join(dir, 'onepass.mar');
  const w = await MarWriter.create(out, {
    productInfo: { channel: 'test-channel', version: '1.0' },
    signatureSlots: marSignatureSlots(keys, 'sha384'),
  });
  await w.addEntry('a.txt', 0o644, new TextEncoder().encode('hello'));
  await w.addEntry('dir/b.bin', 0o755, new Uint8Array(1000).fill(7));
  await w.finish();
  const sigs = await signWriter(w, keys, 'sha384');
  await w.commit();
  assert.equal(sigs.length, 2);
  const r = await verifyMar(out, [k0.pubPath, k1.certPath]);
  assert.deepEqual(r, {
    valid: true,
    status: 'ok',
    signatures: [
      { index: 0, algorithmId: 2, valid: true, status: 'ok' },
      { index: 1, algorithmId: 2, valid: true, status: 'ok' },
    ],
    problems: [],
  });
});

test("slots: one per key with the key's length; bad key lists are refused", () => {
  assert.deepEqual(marSignatureSlots([k0.key, k2.key], 'sha1'), [
    { algorithmId: 1, length: 256 },
    { algorithmId: 1, length: 384 },
  ]);
  const k = k0.key;
  assert.throws(() => marSignatureSlots([], 'sha384'), { code: 'MAR_KEYS_INVALID' });
  assert.throws(() => marSignatureSlots(Array(9).fill(k), 'sha384'), { code: 'MAR_KEYS_INVALID' });
  assert.throws(() => marSignatureSlots([k], 'md5' as 'sha1'), { code: 'MAR_ALGORITHM_UNSUPPORTED' });
});

test('a failed signing leaves no output file', async () => {
  const out = join(dir, 'never.mar');
  await assert.rejects(
    signMarFile(join(PROJECT_ROOT, 'fixtures/mar/bad/MAR_ENTRY_OVERLAP.mar'), out, {
      keys: [k0.key],
      algorithm: 'sha384',
    }),
    { name: 'FormatError', code: 'MAR_ENTRY_OVERLAP' },
  );
  assert.throws(() => readFileSync(out), { code: 'ENOENT' });
});
