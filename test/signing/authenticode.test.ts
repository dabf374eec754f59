import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import forge from 'node-forge';
import { ConfigError, FormatError, VerificationError } from '../../src/errors.js';
import { buildPe, parsePe, readCertificateTable } from '../../src/formats/pe/index.js';
import { isPe, signPe } from '../../src/signing/authenticode.js';
import type { AuthenticodeOptions } from '../../src/signing/types.js';
import { peVerifyOk, verifyPe } from '../../src/signing/verify-pe.js';
import { tempDir } from '../helpers/env.js';
import { makePki, osslOk, osslVerify } from '../helpers/pki.js';

const dir = tempDir();
const pki = makePki({ dir });
const opts = (extra: Partial<AuthenticodeOptions> = {}): AuthenticodeOptions => ({
  key: pki.key,
  certChainDer: pki.chainDer,
  digest: 'sha256',
  ...extra,
});

/** The SignedData of a signed PE, parsed with forge.asn1 (an independent DER parser). */
function forgeSignedData(pe: Uint8Array): forge.asn1.Asn1 {
  const info = parsePe(pe);
  const [entry] = readCertificateTable(pe, info);
  // bCertificate is zero-padded to 8: parse only the DER element itself.
  const fromDer = forge.asn1.fromDer as unknown as (
    b: forge.util.ByteStringBuffer,
    o: object,
  ) => forge.asn1.Asn1;
  const ci = fromDer(forge.util.createBuffer(Buffer.from(entry!.data).toString('binary')), {
    parseAllBytes: false,
  });
  return (ci.value as forge.asn1.Asn1[])[1]!.value[0] as forge.asn1.Asn1;
}
const oidOf = (n: forge.asn1.Asn1): string => forge.asn1.derToOid(n.value as string);
const kids = (n: forge.asn1.Asn1 | undefined): forge.asn1.Asn1[] => n!.value as forge.asn1.Asn1[];

async function writeAndVerify(name: string, bytes: Uint8Array, caPemPath = pki.caPemPath) {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return osslVerify(p, caPemPath);
}

describe('Authenticode SignedData structure', () => {
  test('PKCS#7 v1.5 with SpcIndirectDataContent, sorted signed attributes, rsaEncryption', async () => {
    const pe = buildPe({ arch: 'x86', name: 'structure' });
    const out = await signPe(
      pe,
      opts({ programName: 'Firefox ünicode', programUrl: 'https://www.mozilla.org/' }),
    );
    const sd = kids(forgeSignedData(out));
    assert.equal(forge.asn1.derToInteger(sd[0]!.value as string), 1);
    const [algOid, algParams] = kids(kids(sd[1])[0]);
    assert.equal(oidOf(algOid!), '2.16.840.1.101.3.4.2.1');
    assert.equal(algParams!.type, forge.asn1.Type.NULL);
    const [ctype, wrapped] = kids(sd[2]);
    assert.equal(oidOf(ctype!), '1.3.6.1.4.1.311.2.1.4');
    const spc = kids(wrapped)[0]!;
    assert.equal(spc.type, forge.asn1.Type.SEQUENCE); // not an OCTET STRING
    const signerInfo = kids(sd[4])[0]!;
    const si = kids(signerInfo);
    assert.equal(forge.asn1.derToInteger(si[0]!.value as string), 1);
    const attrs = kids(si[3]);
    const attrDers = attrs.map((a) => Buffer.from(forge.asn1.toDer(a).getBytes(), 'binary'));
    assert.deepEqual(attrDers, [...attrDers].sort(Buffer.compare), 'DER-sorted SET OF');
    const byOid = new Map(attrs.map((a) => [oidOf(kids(a)[0]!), kids(kids(a)[1])[0]!]));
    assert.deepEqual([...byOid.keys()].sort(), [
      '1.2.840.113549.1.9.3',
      '1.2.840.113549.1.9.4',
      '1.3.6.1.4.1.311.2.1.11',
      '1.3.6.1.4.1.311.2.1.12',
    ]);
    assert.equal(oidOf(byOid.get('1.2.840.113549.1.9.3')!), '1.3.6.1.4.1.311.2.1.4');
    assert.equal(oidOf(kids(byOid.get('1.3.6.1.4.1.311.2.1.11'))[0]!), '1.3.6.1.4.1.311.2.1.21');
    // messageDigest = H(contents octets of SpcIndirectDataContent)
    const spcValue = Buffer.from(forge.asn1.toDer(spc).getBytes(), 'binary');
    const hdr = spcValue[1]! < 0x80 ? 2 : 2 + (spcValue[1]! & 0x7f);
    assert.equal(
      Buffer.from(byOid.get('1.2.840.113549.1.9.4')!.value as string, 'binary').toString('hex'),
      createHash('sha256').update(spcValue.subarray(hdr)).digest('hex'),
    );
    assert.equal(oidOf(kids(si[4])[0]!), '1.2.840.113549.1.1.1');
    const r = await writeAndVerify('structure.exe', out);
    assert.ok(osslOk(r), r.output);
    assert.match(r.output, /Text description: Firefox ünicode/);
    assert.match(r.output, /URL description: https:\/\/www\.mozilla\.org\//);
  });

  test('deterministic without signingTime; signingTime added on request', async () => {
    const pe = buildPe({ arch: 'x64' });
    const a = await signPe(pe, opts());
    assert.deepEqual(a, await signPe(pe, opts()));
    const withTime = await signPe(pe, opts({ signingTime: true }));
    const attrs = kids(kids(kids(forgeSignedData(withTime))[4])[0]!.value[3] as forge.asn1.Asn1);
    assert.ok(attrs.some((x) => oidOf(kids(x)[0]!) === '1.2.840.113549.1.9.5'));
    const r = await writeAndVerify('time.exe', withTime);
    assert.ok(osslOk(r), r.output);
    assert.match(r.output, /Signing time:/);
  });

  test('sha1 (legacy) signatures verify with osslsigncode', async () => {
    const out = await signPe(buildPe({ arch: 'x86', kind: 'dll' }), opts({ digest: 'sha1' }));
    const r = await writeAndVerify('sha1.dll', out);
    assert.ok(osslOk(r), r.output);
    assert.match(r.output, /Message digest algorithm\s*:\s*SHA1/);
    assert.equal(verifyPe(out).digestAlgorithm, 'sha1');
  });

  test('a chain with an intermediate verifies to the root', async () => {
    const ipki = makePki({ dir: tempDir('marsign-int-'), intermediate: true });
    const out = await signPe(buildPe({ arch: 'x64' }), {
      key: ipki.key,
      certChainDer: ipki.chainDer,
      digest: 'sha256',
    });
    const r = await writeAndVerify('int.exe', out, ipki.caPemPath);
    assert.ok(osslOk(r), r.output);
    const v = verifyPe(out, { caCertsDer: [ipki.caDer] });
    assert.ok(peVerifyOk(v), v.problems.join('; '));
    assert.equal(v.chainValid, true);
    const wrongCa = verifyPe(out, { caCertsDer: [pki.caDer] });
    assert.equal(wrongCa.chainValid, false);
    assert.equal(wrongCa.signatureValid, true);
  });

  test('output has its own ArrayBuffer (transferable, not from the pool)', async () => {
    const out = await signPe(Buffer.from(buildPe({ arch: 'x86' })), opts());
    assert.equal(out.byteOffset, 0);
    assert.equal(out.buffer.byteLength, out.length);
  });
});

describe('re-signing replaces the existing signature', () => {
  test('an osslsigncode-signed file re-signed by us has one signature, identical to signing the unsigned file', async () => {
    const pe = buildPe({ arch: 'x64', payload: new Uint8Array(333).fill(9) });
    const input = join(dir, 'resign-in.exe');
    writeFileSync(input, pe);
    const osslOut = join(dir, 'resign-ossl.exe');
    execFileSync(
      'osslsigncode',
      [
        'sign',
        '-certs',
        pki.certPemPath,
        '-key',
        pki.keyPemPath,
        '-n',
        'other',
        '-in',
        input,
        '-out',
        osslOut,
      ],
      { stdio: 'pipe' },
    );
    const resigned = await signPe(readFileSync(osslOut), opts());
    assert.deepEqual(resigned, await signPe(pe, opts()));
    assert.equal(readCertificateTable(resigned, parsePe(resigned)).length, 1);
    const r = await writeAndVerify('resigned.exe', resigned);
    assert.ok(osslOk(r), r.output);
    assert.match(r.output, /Number of verified signatures: 1/);
    assert.doesNotMatch(r.output, /Text description: other/);
  });

  test('a table with two entries is replaced by one', async () => {
    const signed = await signPe(buildPe({ arch: 'x64' }), opts());
    const info = parsePe(signed);
    const [e] = readCertificateTable(signed, info);
    const { writeCertificateTable } = await import('../../src/formats/pe/index.js');
    const two = writeCertificateTable(signed, info, [e!.data, e!.data]);
    const r2 = await writeAndVerify('two.exe', two);
    assert.equal(osslOk(r2), false, 'osslsigncode 2.9 rejects two-entry tables');
    // verifyPe reads both entries (as sbverify does): test/signing/verify-pe.test.ts.
    const v = verifyPe(two);
    assert.deepEqual(
      v.signatures.map((x) => [x.entry, x.status]),
      [
        [0, 'not checked'],
        [1, 'not checked'],
      ],
    );
    assert.equal(peVerifyOk(v), true);
    const again = await signPe(two, opts());
    assert.deepEqual(again, signed);
  });
});

describe('bad input and bad configuration → typed errors', () => {
  test('non-PE, truncated PE, no certificate directory → FormatError', async () => {
    const notPe = new TextEncoder().encode('this is a text file called setup.exe\n'.repeat(20));
    assert.equal(isPe(notPe), false);
    await assert.rejects(
      signPe(notPe, opts()),
      (e: unknown) => e instanceof FormatError && e.code === 'PE_NOT_PE',
    );
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }).subarray(0, 0x150), opts()),
      (e: unknown) => e instanceof FormatError && e.code === 'PE_TRUNCATED',
    );
    const noDir = buildPe({ arch: 'x64' });
    new DataView(noDir.buffer).setUint32(0x80 + 132, 3, true);
    await assert.rejects(
      signPe(noDir, opts()),
      (e: unknown) =>
        e instanceof FormatError && e.code === 'PE_NO_CERT_DIRECTORY' && e.offset === 0x80 + 132,
    );
    const signed = await signPe(buildPe({ arch: 'x64' }), opts());
    const appended = Buffer.concat([signed, Buffer.from('appended')]);
    await assert.rejects(
      signPe(appended, opts()),
      (e: unknown) => e instanceof FormatError && e.code === 'PE_CERT_TABLE_NOT_AT_EOF',
    );
  });

  test('a key that does not match the certificate → ConfigError KEY_CERT_MISMATCH', async () => {
    const other = makePki({ dir: tempDir('marsign-other-') });
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }), opts({ key: other.key })),
      (e: unknown) => e instanceof ConfigError && e.code === 'KEY_CERT_MISMATCH',
    );
  });

  test('a backend returning a bad signature → VerificationError, no output', async () => {
    const broken = { ...pki.key, signDigest: async () => new Uint8Array(256).fill(1) };
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }), opts({ key: broken })),
      (e: unknown) => e instanceof VerificationError && e.code === 'SIGNATURE_SELF_CHECK_FAILED',
    );
  });

  test('bad options → ConfigError naming the option', async () => {
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }), opts({ digest: 'md5' as 'sha1' })),
      /options\.digest/,
    );
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }), opts({ certChainDer: [] })),
      /options\.certChainDer/,
    );
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }), opts({ programUrl: 'https://exämple.org' })),
      (e: unknown) => e instanceof ConfigError,
    );
  });
});
