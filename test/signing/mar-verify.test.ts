import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { SHARED_SKIP, peerMar, tempDir } from '../helpers/env.js';

const dir = tempDir('marsign-marverify-');
const cert = (n: string) => peerMar(`firefox-libmar/${n}.der`);
const pub = (n: string) => peerMar(`keys/${n}.pub.pem`);

// Every signed peer MAR with its certificates in signature order (SOURCES.md "verified with").
const SIGNED: [string, (string | Uint8Array)[]][] = [
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

test(
  'every signed peer MAR verifies with its certificates in order (DER, PEM, path or bytes)',
  { skip: SHARED_SKIP },
  async () => {
    for (const [f, certs] of SIGNED) {
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

test('wrong order, wrong key or wrong count is rejected (libmar rule)', { skip: SHARED_SKIP }, async () => {
  for (const order of [
    ['mycert2', 'mycert', 'mycert3'],
    ['mycert', 'mycert3', 'mycert2'],
    ['mycert3', 'mycert2', 'mycert'],
  ]) {
    const r = await verifyMar(peerMar('firefox-libmar/multiple_signed_pib.mar'), order.map(cert));
    assert.equal(r.valid, false, order.join(','));
  }
  const two = await verifyMar(peerMar('firefox-libmar/multiple_signed_pib.mar'), [
    cert('mycert'),
    cert('mycert2'),
  ]);
  assert.equal(two.valid, false);
  assert.deepEqual(
    two.signatures.map((s) => s.valid),
    [true, true, false],
  );
  assert.match(two.problems.join('\n'), /3 signature\(s\) but 2 certificate\(s\)/);
  const four = await verifyMar(peerMar('firefox-libmar/signed_pib.mar'), [cert('mycert'), cert('mycert')]);
  assert.equal(four.valid, false);
  assert.equal((await verifyMar(peerMar('firefox-libmar/signed_pib.mar'), [cert('mycert2')])).valid, false);
  assert.equal(
    (
      await verifyMar(peerMar('firefox-libmar/multiple_signed_pib_2.mar'), [
        cert('mycert'),
        cert('mycert2'),
        cert('mycert3'),
      ])
    ).valid,
    false,
  );
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

test(
  'any flipped byte outside the signature breaks it; the signature bytes themselves too',
  { skip: SHARED_SKIP },
  async () => {
    const orig = readFileSync(peerMar('firefox-libmar/signed_pib.mar'));
    const f = join(dir, 'flip.mar');
    // header field, signature length area, signature bytes, PIB, entry data, index name
    for (const off of [21, 100, 560, 700, orig.length - 5]) {
      const b = Buffer.from(orig);
      b[off]! ^= 0x01;
      writeFileSync(f, b);
      const r = await verifyMar(f, [cert('mycert')]).catch((e: Error) => ({ valid: false, error: e }));
      assert.equal(r.valid, false, `flip at ${off}`);
    }
    copyFileSync(peerMar('firefox-libmar/signed_pib.mar'), f);
    assert.equal((await verifyMar(f, [cert('mycert')])).valid, true, 'control');
  },
);

test('unsigned, unsupported-algorithm and old-style MARs are not valid', { skip: SHARED_SKIP }, async () => {
  const unsigned = await verifyMar(peerMar('firefox-libmar/binary_data.mar'), []);
  assert.equal(unsigned.valid, false);
  assert.match(unsigned.problems.join(), /no signatures/);
  const margo = await verifyMar(peerMar('margo/miniMarB.mar'), [cert('mycert'), cert('mycert')]);
  assert.equal(margo.valid, false);
  assert.deepEqual(
    margo.signatures.map((s) => s.algorithmId),
    [2, 3],
  );
  assert.match(margo.problems.join('\n'), /unsupported algorithm id 3/);
  // Asked for and impossible to check is invalid, never ok or silently skipped.
  assert.deepEqual(
    [margo.signatures[1]!.valid, margo.signatures[1]!.status, margo.signatures[1]!.reason],
    [false, 'invalid', 'signature 1: unsupported algorithm id 3'],
  );
  const old = await verifyMar(peerMar('firefox-libmar/no_pib.mar'), [cert('mycert')]);
  assert.equal(old.valid, false);
});

test(
  'bad certificate input is a ConfigError; a non-MAR is a FormatError',
  { skip: SHARED_SKIP },
  async () => {
    await assert.rejects(verifyMar(peerMar('firefox-libmar/signed_pib.mar'), [join(dir, 'missing.der')]), {
      code: 'CERT_NOT_FOUND',
    });
    await assert.rejects(verifyMar(peerMar('firefox-libmar/signed_pib.mar'), [new Uint8Array([1, 2, 3])]), {
      code: 'PUBLIC_KEY_INVALID',
    });
    await assert.rejects(verifyMar(peerMar('firefox-libmar/mycert.der'), [cert('mycert')]), {
      name: 'FormatError',
      code: 'MAR_BAD_MAGIC',
    });
  },
);
