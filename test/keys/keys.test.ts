import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  X509Certificate,
  constants,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  publicDecrypt,
  sign,
} from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { test } from 'node:test';
import { ConfigError, UsageError } from '../../src/errors.js';
import {
  NodeRsaKey,
  generateDevKeys,
  loadPemKey,
  loadPkcs12,
  pemCertificates,
  publicKeyFrom,
} from '../../src/keys/index.js';
import { tempDir } from '../helpers/env.js';

const PASS = 'k3y-Passphrase-Never-Printed';
const dir = tempDir('marsign-keys-');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const plainPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const encPem = privateKey.export({
  type: 'pkcs8',
  format: 'pem',
  cipher: 'aes-256-cbc',
  passphrase: PASS,
}) as string;
const encPkcs1 = privateKey.export({
  type: 'pkcs1',
  format: 'pem',
  cipher: 'aes-128-cbc',
  passphrase: PASS,
}) as string;

test('signDigest equals node:crypto sign() (PKCS#1 v1.5) for every hash', async () => {
  const key = loadPemKey(plainPem);
  const data = Buffer.from('marsign signDigest known answer');
  for (const h of ['sha1', 'sha256', 'sha384', 'sha512'] as const) {
    const digest = createHash(h).update(data).digest();
    const ours = Buffer.from(await key.signDigest(h, digest));
    assert.deepEqual(ours, sign(h, data, { key: privateKey, padding: constants.RSA_PKCS1_PADDING }), h);
    assert.equal(ours.length, 256);
  }
});

test('signature verifies with openssl pkeyutl -verify (independent check)', async () => {
  const key = loadPemKey(plainPem);
  const data = Buffer.from('openssl cross-check');
  const sig = await key.signDigest('sha384', createHash('sha384').update(data).digest());
  writeFileSync(join(dir, 'data.bin'), data);
  writeFileSync(join(dir, 'sig.bin'), sig);
  writeFileSync(
    join(dir, 'pub.pem'),
    Buffer.from(publicKeyFrom(key.publicKeyDer).export({ type: 'spki', format: 'pem' })),
  );
  const out = execFileSync('openssl', [
    'dgst',
    '-sha384',
    '-verify',
    join(dir, 'pub.pem'),
    '-signature',
    join(dir, 'sig.bin'),
    join(dir, 'data.bin'),
  ]);
  assert.match(out.toString(), /Verified OK/);
});

test('a digest of the wrong length is refused', async () => {
  const key = loadPemKey(plainPem);
  await assert.rejects(
    key.signDigest('sha384', new Uint8Array(32)),
    (e: ConfigError) => e.code === 'KEY_BAD_DIGEST_LENGTH',
  );
});

test('id, bits and publicKeyDer describe the key', () => {
  const key = loadPemKey(plainPem);
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  assert.deepEqual(Buffer.from(key.publicKeyDer), spki);
  assert.equal(key.bits, 2048);
  assert.equal(key.type, 'rsa');
  assert.equal(key.id, createHash('sha256').update(spki).digest('hex'));
  // The public half recovers what the private half signed.
  const sig = key.signDigestSync('sha256', createHash('sha256').update('x').digest());
  const rec = publicDecrypt(
    { key: publicKeyFrom(key.publicKeyDer), padding: constants.RSA_PKCS1_PADDING },
    sig,
  );
  assert.equal(rec.length, 19 + 32);
});

test('encrypted PEM: right passphrase loads, wrong or missing passphrase is a typed error without the secret', () => {
  for (const pem of [encPem, encPkcs1]) {
    assert.equal(loadPemKey(pem, PASS).bits, 2048);
    assert.throws(
      () => loadPemKey(pem, 'not-the-passphrase'),
      (e: ConfigError) => {
        assert.equal(e.code, 'KEY_PASSPHRASE_WRONG');
        assert.ok(!e.message.includes('not-the-passphrase'));
        return true;
      },
    );
    assert.throws(
      () => loadPemKey(pem),
      (e: ConfigError) => e.code === 'KEY_PASSPHRASE_REQUIRED',
    );
  }
});

test('garbage, public keys and non-RSA keys are refused with codes', () => {
  assert.throws(
    () => loadPemKey('hello'),
    (e: ConfigError) => e.code === 'KEY_INVALID',
  );
  assert.throws(
    () =>
      loadPemKey(
        readFileSync('/dev/null').toString() +
          '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
      ),
    (e: ConfigError) => e.code === 'KEY_INVALID',
  );
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
    type: 'pkcs8',
    format: 'pem',
  }) as string;
  assert.throws(
    () => loadPemKey(ec),
    (e: ConfigError) => e.code === 'KEY_UNSUPPORTED',
  );
});

test('the private key never shows in JSON or util.inspect', () => {
  const key = loadPemKey(encPem, PASS);
  const body = plainPem.split('\n')[5]!;
  const json = JSON.stringify({ key });
  const insp = inspect(key, { depth: 10, showHidden: true });
  for (const s of [json, insp]) {
    assert.ok(!s.includes(body), 'no PEM body');
    assert.ok(!s.includes(PASS), 'no passphrase');
  }
  assert.deepEqual(JSON.parse(json).key, { type: 'rsa', id: key.id, bits: 2048 });
});

test('PKCS#12 from openssl: key, chain ordered signer first; wrong passphrase is KEY_PASSPHRASE_WRONG', async () => {
  const d = tempDir('marsign-p12-');
  const dev = await generateDevKeys(d);
  const p12 = join(d, 'cs.p12');
  // Chain given CA first on purpose: loadPkcs12 must put the signer first.
  execFileSync('openssl', [
    'pkcs12',
    '-export',
    '-inkey',
    dev.codeSigningKey,
    '-in',
    dev.codeSigningCert,
    '-certfile',
    dev.caCert,
    '-passout',
    `pass:${PASS}`,
    '-out',
    p12,
  ]);
  const { key, chainDer } = loadPkcs12(readFileSync(p12), PASS);
  assert.equal(chainDer.length, 2);
  assert.deepEqual(
    Buffer.from(chainDer[0]!),
    Buffer.from(pemCertificates(readFileSync(dev.codeSigningCert))[0]!),
  );
  assert.deepEqual(Buffer.from(chainDer[1]!), Buffer.from(pemCertificates(readFileSync(dev.caCert))[0]!));
  assert.equal(key.id, loadPemKey(readFileSync(dev.codeSigningKey)).id);
  assert.throws(
    () => loadPkcs12(readFileSync(p12), 'wrong'),
    (e: ConfigError) => {
      assert.equal(e.code, 'KEY_PASSPHRASE_WRONG');
      return !e.message.includes(PASS);
    },
  );
  assert.throws(
    () => loadPkcs12(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x03]), PASS),
    (e: ConfigError) => e.code === 'PKCS12_INVALID',
  );
});

test('keys dev PKI: chains to the CA (openssl verify), EKUs as labelled, config usable', async () => {
  const d = tempDir('marsign-dev-');
  const dev = await generateDevKeys(d, { marKeyBits: 3072 });
  const ok = execFileSync('openssl', [
    'verify',
    '-CAfile',
    dev.caCert,
    '-purpose',
    'any',
    dev.codeSigningCert,
    dev.tsaCert,
  ]).toString();
  assert.match(ok, /codesign\.cert\.pem: OK/);
  assert.match(ok, /tsa\.cert\.pem: OK/);
  const cs = new X509Certificate(readFileSync(dev.codeSigningCert));
  assert.deepEqual(cs.keyUsage, ['1.3.6.1.5.5.7.3.3']);
  assert.match(cs.subject, /TEST-ONLY/);
  const tsaText = execFileSync('openssl', ['x509', '-in', dev.tsaCert, '-noout', '-text']).toString();
  assert.match(tsaText, /Extended Key Usage: critical\s+Time Stamping/);
  assert.ok(new X509Certificate(readFileSync(dev.caCert)).ca);
  const mar = loadPemKey(readFileSync(dev.marKey));
  assert.equal(mar.bits, 3072);
  assert.deepEqual(
    Buffer.from(
      new X509Certificate(readFileSync(dev.marCertDer)).publicKey.export({ type: 'spki', format: 'der' }),
    ),
    Buffer.from(mar.publicKeyDer),
  );
  assert.equal(statSync(dev.marKey).mode & 0o777, 0o600);
  assert.match(readFileSync(dev.readme, 'utf8'), /TEST-ONLY/);
  const cfg = JSON.parse(readFileSync(dev.config, 'utf8'));
  assert.deepEqual(cfg.profiles.dev.mar, { keys: ['mar.key.pem'], algorithm: 'sha384' });
  await assert.rejects(generateDevKeys(d), (e: UsageError) => e.code === 'DEV_KEYS_EXIST');
  await assert.rejects(
    generateDevKeys(d, { bits: 1024, force: true }),
    (e: UsageError) => e.code === 'BAD_KEY_SIZE',
  );
});

test('NodeRsaKey refuses public or non-RSA KeyObjects', () => {
  assert.equal(new NodeRsaKey(createPrivateKey(plainPem)).bits, 2048);
  assert.throws(
    () => new NodeRsaKey(publicKeyFrom(loadPemKey(plainPem).publicKeyDer)),
    (e: ConfigError) => e.code === 'KEY_NOT_PRIVATE',
  );
});
