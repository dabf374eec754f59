import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BufferSource } from '../../src/io/byte-source.js';
import { readMar } from '../../src/formats/mar/index.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { SHARED_SKIP, peerMar, tempDir } from '../helpers/env.js';
import { marTestKeys, writeTestMar, type MarTestKey } from '../helpers/mar-keys.js';
import { rawMar } from '../formats/mar/raw-mar.js';

const dir = tempDir('marsign-marverify-');
const cert = (n: string) => peerMar(`firefox-libmar/${n}.der`);
const pub = (n: string) => peerMar(`keys/${n}.pub.pem`);
const [k0, k1, k2] = marTestKeys(dir, [2048, 2048, 2048]) as [MarTestKey, MarTestKey, MarTestKey];

test(
  'every signed peer MAR verifies with its certificates in order (DER, PEM, path or bytes)',
  { skip: SHARED_SKIP },
  async () => {
    // Every signed peer MAR with its certificates in signature order (SOURCES.md "verified with").
    const signed: [string, (string | Uint8Array)[]][] = [
      ['firefox-libmar/signed_pib.mar', [cert('mycert')]],
      ['firefox-libmar/signed_no_pib.mar', [pub('mycert')]],
      ['firefox-libmar/multiple_signed_pib.mar', [cert('mycert'), cert('mycert2'), cert('mycert3')]],
      ['firefox-libmar/multiple_signed_pib.mar', [pub('mycert'), pub('mycert2'), pub('mycert3')]],
      ['firefox-libmar/multiple_signed_pib_2.mar', [cert('mycert'), cert('mycert'), cert('mycert3')]],
      ['firefox-updater/complete.mar', [peerMar('firefox-updater/xpcshellCertificate.der')]],
      ['firefox-updater/partial.mar', [peerMar('firefox-updater/xpcshellCertificate.der')]],
      ['firefox-updater/old_version.mar', [readFileSync(peerMar('firefox-updater/xpcshellCertificate.der'))]],
      ['build-mar/test-bz2.mar', [peerMar('build-mar/test.pubkey')]],
    ];
    for (const [f, certs] of signed) {
      const r = await verifyMar(peerMar(f), certs);
      assert.equal(r.valid, true, `${f}: ${r.problems.join('; ')}`);
      assert.equal(r.signatures.length, certs.length);
    }
    const bz2 = await verifyMar(peerMar('build-mar/test-bz2.mar'), [
      readFileSync(peerMar('build-mar/test.pubkey'), 'utf8'),
    ]);
    assert.deepEqual(
      bz2.signatures,
      [{ index: 0, algorithmId: 1, valid: true, status: 'ok' }],
      'alg-1 (SHA-1) MAR, PEM text given as a string',
    );
  },
);

test('wrong order, wrong key or wrong count is rejected (libmar rule)', async () => {
  const multi = await writeTestMar(join(dir, 'multi.mar'), { keys: [k0.key, k1.key, k2.key] });
  const same = await writeTestMar(join(dir, 'multi2.mar'), { keys: [k0.key, k0.key, k2.key] });
  const one = await writeTestMar(join(dir, 'one.mar'), { keys: [k0.key] });
  const ok = await verifyMar(multi, [k0.certPath, k1.certPath, k2.certPath]);
  assert.deepEqual(ok, {
    valid: true,
    status: 'ok',
    signatures: [0, 1, 2].map((index) => ({ index, algorithmId: 2, valid: true, status: 'ok' })),
    problems: [],
  });
  assert.equal((await verifyMar(same, [k0.certPath, k0.pubPath, k2.certPath])).valid, true, 'control');
  for (const order of [
    [k1, k0, k2],
    [k0, k2, k1],
    [k2, k1, k0],
  ]) {
    const r = await verifyMar(
      multi,
      order.map((k) => k.certPath),
    );
    assert.equal(r.valid, false, order.map((k) => k.name).join(','));
  }
  const two = await verifyMar(multi, [k0.certPath, k1.certPath]);
  assert.equal(two.valid, false);
  assert.deepEqual(
    two.signatures.map((s) => s.valid),
    [true, true, false],
  );
  assert.match(two.problems.join('\n'), /3 signature\(s\) but 2 certificate\(s\)/);
  const four = await verifyMar(one, [k0.certPath, k0.certPath]);
  assert.equal(four.valid, false);
  assert.equal((await verifyMar(one, [k1.certPath])).valid, false);
  assert.equal((await verifyMar(same, [k0.certPath, k1.certPath, k2.certPath])).valid, false);
});

test(
  'manipulated_signed.mar (one byte appended) is rejected: hashing runs to the real EOF',
  { skip: SHARED_SKIP },
  async () => {
    const r = await verifyMar(peerMar('firefox-libmar/manipulated_signed.mar'), [cert('mycert')]);
    assert.equal(r.valid, false);
    assert.deepEqual(r.signatures, [
      {
        index: 0,
        algorithmId: 2,
        valid: false,
        status: 'invalid',
        reason: 'signature 0 (algorithm id 2) does not verify with certificate 0',
      },
    ]);
    assert.equal(r.status, 'invalid');
    assert.match(r.problems.join('\n'), /file_size field says 1193 bytes, the file has 1194/);
  },
);

test('any flipped or appended byte breaks the signature; the signature bytes themselves too', async () => {
  const f = await writeTestMar(join(dir, 'flip-orig.mar'), { keys: [k0.key] });
  const orig = readFileSync(f);
  const info = await readMar(new BufferSource(orig));
  const [sig] = info.signatures;
  const [pib] = info.additionalSections;
  const data = info.entries.find((e) => e.size > 100)!;
  assert.ok(sig && pib);
  const t = join(dir, 'flip.mar');
  for (const [off, what] of [
    [9, 'file size field'],
    [sig.offset - 2, 'signature length field'],
    [sig.offset + 100, 'signature bytes'],
    [pib.offset + 2, 'product information'],
    [data.offset + 50, 'entry data'],
    [orig.length - 5, 'index name'],
  ] as const) {
    const b = Buffer.from(orig);
    b[off]! ^= 0x01;
    writeFileSync(t, b);
    const r = await verifyMar(t, [k0.certPath]).catch((e: Error) => ({ valid: false, error: e }));
    assert.equal(r.valid, false, `flip at ${off} (${what})`);
  }
  copyFileSync(f, t);
  assert.equal((await verifyMar(t, [k0.certPath])).valid, true, 'control');
  appendFileSync(t, Buffer.from([0]));
  const r = await verifyMar(t, [k0.certPath]);
  assert.deepEqual(r.signatures, [
    {
      index: 0,
      algorithmId: 2,
      valid: false,
      status: 'invalid',
      reason: 'signature 0 (algorithm id 2) does not verify with certificate 0',
    },
  ]);
  assert.match(
    r.problems.join('\n'),
    new RegExp(`file_size field says ${orig.length} bytes, the file has ${orig.length + 1}`),
  );
});

test('unsigned, unsupported-algorithm and old-style MARs are not valid', async () => {
  const unsigned = await verifyMar(await writeTestMar(join(dir, 'unsigned.mar')), []);
  assert.equal(unsigned.valid, false);
  assert.match(unsigned.problems.join(), /no signatures/);
  // Like margo's miniMarB.mar: a SHA-384 slot and an algorithm-3 slot.
  const alg3 = join(dir, 'alg3.mar');
  writeFileSync(
    alg3,
    rawMar({
      signatures: [
        { id: 2, length: 256 },
        { id: 3, length: 64 },
      ],
      entries: [{ name: 'a', data: new TextEncoder().encode('a') }],
    }),
  );
  const three = await verifyMar(alg3, [k0.certPath, k0.certPath]);
  assert.equal(three.valid, false);
  assert.deepEqual(
    three.signatures.map((s) => s.algorithmId),
    [2, 3],
  );
  assert.match(three.problems.join('\n'), /unsupported algorithm id 3/);
  // Asked for and impossible to check is invalid, never ok or silently skipped.
  assert.deepEqual(
    [three.signatures[1]!.valid, three.signatures[1]!.status, three.signatures[1]!.reason],
    [false, 'invalid', 'signature 1: unsupported algorithm id 3'],
  );
  const oldStyle = join(dir, 'old.mar');
  writeFileSync(oldStyle, rawMar({ style: 'old', entries: [{ name: 'a', data: new Uint8Array(3) }] }));
  const old = await verifyMar(oldStyle, [k0.certPath]);
  assert.equal(old.valid, false);
  assert.deepEqual(old.problems, ['old-style MAR: no signature block']);
});

test('bad certificate input is a ConfigError; a non-MAR is a FormatError', async () => {
  const signed = await writeTestMar(join(dir, 'certs.mar'), { keys: [k0.key] });
  await assert.rejects(verifyMar(signed, [join(dir, 'missing.der')]), {
    name: 'ConfigError',
    code: 'CERT_NOT_FOUND',
  });
  await assert.rejects(verifyMar(signed, [new Uint8Array([1, 2, 3])]), {
    name: 'ConfigError',
    code: 'PUBLIC_KEY_INVALID',
  });
  await assert.rejects(verifyMar(k0.certPath, [k0.certPath]), {
    name: 'FormatError',
    code: 'MAR_BAD_MAGIC',
  });
});
