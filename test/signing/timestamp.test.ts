import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  AuthorityError,
  ConfigError,
  isRetryable,
  TransientError,
  VerificationError,
} from '../../src/errors.js';
import { decodeAt } from '../../src/formats/asn1/der.js';
import { OID } from '../../src/formats/asn1/oids.js';
import { parseSignedData } from '../../src/formats/asn1/pkcs7.js';
import { buildPe, parsePe, readCertificateTable, writeCertificateTable } from '../../src/formats/pe/index.js';
import { signPe } from '../../src/signing/authenticode.js';
import { embedTimestampToken, fetchTimestampToken, readTimestampToken } from '../../src/signing/timestamp.js';
import type { AuthenticodeOptions, TimestampOptions } from '../../src/signing/types.js';
import { peVerifyOk, verifyPe } from '../../src/signing/verify-pe.js';
import { tempDir } from '../helpers/env.js';
import { makePki, osslOk, osslVerify } from '../helpers/pki.js';
import { downUrl, startTsa, type TestTsa, type TsaMode } from '../helpers/tsa.js';

const run = promisify(execFile);
const dir = tempDir();
const pki = makePki({ dir });
const tsas = new Map<TsaMode, TestTsa>();
let down1: string;
let down2: string;

const MODES = ['ok', 'reject', 'wrong-imprint', 'garbage', 'http-503', 'hang', 'huge'] as const;
const tsaDirs = MODES.map((mode) => tempDir(`marsign-tsa-${mode}-`));

before(async () => {
  for (const [i, mode] of MODES.entries()) tsas.set(mode, await startTsa({ dir: tsaDirs[i]!, mode }));
  down1 = await downUrl();
  down2 = await downUrl();
});
after(async () => {
  for (const t of tsas.values()) await t.stop();
});
const tsa = (m: TsaMode): TestTsa => tsas.get(m)!;

const opts = (
  timestamp: TimestampOptions,
  extra: Partial<AuthenticodeOptions> = {},
): AuthenticodeOptions => ({
  key: pki.key,
  certChainDer: pki.chainDer,
  digest: 'sha256',
  timestamp: { backoffMs: 1, ...timestamp },
  ...extra,
});

function signerInfoOf(pe: Uint8Array) {
  const [entry] = readCertificateTable(pe, parsePe(pe));
  return parseSignedData(decodeAt(entry!.data, 0).der).signerInfos[0]!;
}

describe('timestamped signatures', () => {
  for (const [arch, digest] of [
    ['x86', 'sha256'],
    ['x64', 'sha256'],
    ['x64', 'sha1'],
  ] as const) {
    test(`${arch} ${digest}: osslsigncode verifies the signature and the timestamp`, async () => {
      const out = await signPe(buildPe({ arch }), opts({ urls: [tsa('ok').url] }, { digest }));
      const path = join(dir, `ts-${arch}-${digest}.exe`);
      writeFileSync(path, out);
      const r = await osslVerify(path, pki.caPemPath, tsa('ok').caPemPath);
      assert.ok(osslOk(r), r.output);
      assert.match(r.output, /Timestamp Server Signature verification: ok/);
      const si = signerInfoOf(out);
      const attr = si.unsignedAttrs.filter((a) => a.oid === OID.spcRfc3161Timestamp);
      assert.equal(attr.length, 1);
      const token = readTimestampToken(attr[0]!.values[0]!.der);
      assert.equal(token.tstInfo.hashAlgorithm, digest === 'sha1' ? OID.sha1 : OID.sha256);
      const v = verifyPe(out, { caCertsDer: [pki.caDer], tsaCaCertsDer: [tsa('ok').caDer] });
      assert.ok(peVerifyOk(v), v.problems.join('; '));
      assert.equal(v.timestamp?.valid, true);
      assert.equal(v.timestamp?.time, token.tstInfo.genTime.toISOString());
      assert.deepEqual(v.signatures[0]!.checks.timestamp, { status: 'ok', time: v.timestamp?.time });
      assert.equal(v.status, 'ok');
      assert.deepEqual(v.notChecked, []);
      const wrongTsaCa = verifyPe(out, { caCertsDer: [pki.caDer], tsaCaCertsDer: [pki.caDer] });
      assert.equal(wrongTsaCa.timestamp?.valid, false);
      assert.equal(wrongTsaCa.signatures[0]!.checks.timestamp?.status, 'invalid');
      assert.equal(peVerifyOk(wrongTsaCa), false);
      // No TSA CA: the TSA chain is not checked, so the timestamp is "not checked", never valid.
      const noTsaCa = verifyPe(out, { caCertsDer: [pki.caDer] });
      assert.equal(noTsaCa.timestamp?.present, true);
      assert.equal('valid' in noTsaCa.timestamp!, false);
      assert.equal(noTsaCa.signatures[0]!.checks.timestamp?.status, 'not checked');
      assert.match(noTsaCa.signatures[0]!.checks.timestamp!.reason!, /no TSA CA given \(--tsa-ca\)/);
      assert.deepEqual(noTsaCa.notChecked, [`timestamp: ${noTsaCa.signatures[0]!.checks.timestamp!.reason}`]);
      assert.equal(noTsaCa.status, 'not checked');
      assert.equal(peVerifyOk(noTsaCa), true, 'nothing checked is invalid');
    });
  }

  test('a tampered token fails in both verifiers', async () => {
    const out = await signPe(buildPe({ arch: 'x64' }), opts({ urls: [tsa('ok').url] }));
    const si = signerInfoOf(out);
    const tok = si.unsignedAttrs.find((a) => a.oid === OID.spcRfc3161Timestamp)!.values[0]!;
    const { tstInfoDer } = readTimestampToken(tok.der);
    const at = tstInfoDer.byteOffset - out.byteOffset + tstInfoDer.length - 3; // inside TSTInfo
    const bad = new Uint8Array(out);
    bad[at] = bad[at]! ^ 0x01;
    const path = join(dir, 'ts-tampered.exe');
    writeFileSync(path, bad);
    const r = await osslVerify(path, pki.caPemPath, tsa('ok').caPemPath);
    assert.equal(osslOk(r) && /Timestamp Server Signature verification: ok/.test(r.output), false, r.output);
    const v = verifyPe(bad, { caCertsDer: [pki.caDer], tsaCaCertsDer: [tsa('ok').caDer] });
    assert.equal(v.timestamp?.valid, false);
    assert.equal(peVerifyOk(v), false);
  });

  test('verifyPe reads osslsigncode-made timestamped signatures the same way', async () => {
    const input = join(dir, 'ossl-ts-in.exe');
    writeFileSync(input, buildPe({ arch: 'x86', kind: 'dll' }));
    const output = join(dir, 'ossl-ts-out.exe');
    // async: the authority runs in this process, so a synchronous spawn would block it
    const sign = ['sign', '-certs', pki.certPemPath, '-key', pki.keyPemPath, '-ts', tsa('ok').url];
    await run('osslsigncode', [...sign, '-in', input, '-out', output]);
    const bytes = readFileSync(output);
    const v = verifyPe(bytes, { caCertsDer: [pki.caDer], tsaCaCertsDer: [tsa('ok').caDer] });
    assert.ok(peVerifyOk(v), v.problems.join('; '));
    assert.equal(v.timestamp?.valid, true);
    assert.equal(
      verifyPe(bytes, { caCertsDer: [pki.caDer], tsaCaCertsDer: [pki.caDer] }).timestamp?.valid,
      false,
    );
  });

  test('embedding again replaces the earlier token (one attribute)', async () => {
    const signed = await signPe(buildPe({ arch: 'x86' }), opts({ urls: [tsa('ok').url] }));
    const info = parsePe(signed);
    const [entry] = readCertificateTable(signed, info);
    const der = decodeAt(entry!.data, 0).der;
    const si = parseSignedData(der).signerInfos[0]!;
    const token = await fetchTimestampToken(si.signature, { urls: [tsa('ok').url] });
    const again = writeCertificateTable(signed, info, [embedTimestampToken(der, token)]);
    const attrs = signerInfoOf(again).unsignedAttrs.filter((a) => a.oid === OID.spcRfc3161Timestamp);
    assert.equal(attrs.length, 1);
    assert.deepEqual(attrs[0]!.values[0]!.der, token);
    const path = join(dir, 'ts-again.exe');
    writeFileSync(path, again);
    assert.ok(osslOk(await osslVerify(path, pki.caPemPath, tsa('ok').caPemPath)));
  });
});

describe('authorities tried in order, with retries', () => {
  test('an authority that is down falls back to the next', async () => {
    const before = tsa('ok').requests;
    const out = await signPe(buildPe({ arch: 'x64' }), opts({ urls: [down1, tsa('ok').url], retries: 2 }));
    assert.equal(tsa('ok').requests, before + 1);
    assert.equal(verifyPe(out, { tsaCaCertsDer: [tsa('ok').caDer] }).timestamp?.valid, true);
  });

  test('a bad reply falls back to the next authority too', async () => {
    const out = await signPe(buildPe({ arch: 'x64' }), opts({ urls: [tsa('reject').url, tsa('ok').url] }));
    assert.equal(verifyPe(out).timestamp?.present, true);
  });

  test('all authorities down → TransientError TSA_UNAVAILABLE (retryable), each tried `retries` times', async () => {
    const busy = tsa('http-503');
    const before = busy.requests;
    await assert.rejects(
      signPe(buildPe({ arch: 'x86' }), opts({ urls: [down1, busy.url, down2], retries: 3 })),
      (e: unknown) => {
        assert.ok(e instanceof TransientError);
        assert.equal(e.code, 'TSA_UNAVAILABLE');
        assert.equal(isRetryable(e), true);
        assert.equal((e.details?.failures as unknown[]).length, 9);
        return true;
      },
    );
    assert.equal(busy.requests, before + 3);
  });

  const badReplies: Array<[TsaMode, string]> = [
    ['reject', 'TSA_REJECTED'],
    ['wrong-imprint', 'TSA_IMPRINT_MISMATCH'],
    ['garbage', 'TSA_BAD_REPLY'],
    ['huge', 'TSA_BAD_REPLY'],
  ];
  for (const [mode, code] of badReplies) {
    // The authority's fault, not a verdict on the file: AuthorityError (exit 2), never
    // VerificationError (exit 1, "verified and found invalid"); the message names the URL.
    test(`${mode} → AuthorityError ${code} naming the authority, not retried`, async () => {
      const t = tsa(mode);
      const before = t.requests;
      await assert.rejects(
        fetchTimestampToken(new Uint8Array(256).fill(5), { urls: [t.url], backoffMs: 1 }),
        (e: unknown) => {
          assert.ok(e instanceof AuthorityError, String(e));
          assert.ok(!(e instanceof VerificationError));
          assert.equal(e.code, code);
          assert.equal(isRetryable(e), false);
          assert.ok(e.message.includes(`${t.url}: ${code}: `), e.message);
          return true;
        },
      );
      assert.equal(t.requests, before + 1);
    });
  }

  test('several bad authorities: the message names each one with its own failure', async () => {
    const urls = [tsa('reject').url, tsa('garbage').url, tsa('wrong-imprint').url];
    await assert.rejects(
      fetchTimestampToken(new Uint8Array(256).fill(6), { urls, backoffMs: 1 }),
      (e: unknown) => {
        assert.ok(e instanceof AuthorityError, String(e));
        assert.equal(e.code, 'TSA_REJECTED', 'the first bad reply decides the code');
        const [reject, garbage, imprint] = urls;
        assert.match(
          e.message,
          new RegExp(
            `^no usable timestamp token: ${reject}: TSA_REJECTED: .+; ${garbage}: TSA_BAD_REPLY: not a TimeStampResp.+; ${imprint}: TSA_IMPRINT_MISMATCH: `,
          ),
        );
        assert.doesNotMatch(e.message, /\n/);
        assert.equal((e.details?.failures as unknown[]).length, 3);
        return true;
      },
    );
  });

  test('a down authority before a bad one: TSA_UNAVAILABLE names both, with the attempts', async () => {
    const bad = tsa('garbage').url;
    await assert.rejects(
      fetchTimestampToken(new Uint8Array(8), { urls: [down1, bad], retries: 2, backoffMs: 1 }),
      (e: unknown) => {
        assert.ok(e instanceof TransientError, String(e));
        assert.equal(e.code, 'TSA_UNAVAILABLE');
        assert.ok(e.message.includes(`${down1}: ECONNREFUSED: `), e.message);
        assert.ok(e.message.includes('(2 attempts)'), e.message);
        assert.ok(e.message.includes(`${bad}: TSA_BAD_REPLY: `), e.message);
        return true;
      },
    );
  });

  test('an authority that never answers times out, is retried, then TSA_UNAVAILABLE', async () => {
    const t = tsa('hang');
    const before = t.requests;
    await assert.rejects(
      fetchTimestampToken(new Uint8Array(8), { urls: [t.url], retries: 2, backoffMs: 1, timeoutMs: 200 }),
      (e: unknown) => e instanceof TransientError && e.code === 'TSA_UNAVAILABLE',
    );
    assert.equal(t.requests, before + 2);
  });

  test('bad timestamp options → ConfigError', async () => {
    const sig = new Uint8Array(32);
    await assert.rejects(fetchTimestampToken(sig, { urls: [] }), ConfigError);
    await assert.rejects(fetchTimestampToken(sig, { urls: ['ftp://127.0.0.1/tsa'] }), /http or https/);
    await assert.rejects(fetchTimestampToken(sig, { urls: [down1], retries: 0 }), /timestamp\.retries/);
  });
});
