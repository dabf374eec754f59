/**
 * verifyPe over every signature of a file: two WIN_CERTIFICATE entries (the UEFI layout of shim and
 * other vendor files, made with writeCertificateTable) and nested signatures (made by `osslsigncode
 * sign -nest`), each checked against the independent tools: `sbverify --list` and `pesign -S` list
 * table entries, `osslsigncode verify` lists and verifies nested signatures (and verifies each entry
 * when it is alone in the table, since it refuses two-entry tables).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ConfigError } from '../../src/errors.js';
import {
  children,
  ctxTag,
  decodeAt,
  explicit,
  oid,
  seq,
  setOf,
  tlv,
  TAG,
} from '../../src/formats/asn1/der.js';
import { OID } from '../../src/formats/asn1/oids.js';
import { parseSignedData } from '../../src/formats/asn1/pkcs7.js';
import { buildPe, parsePe, readCertificateTable, writeCertificateTable } from '../../src/formats/pe/index.js';
import { signPe } from '../../src/signing/authenticode.js';
import type { PeVerifyResult } from '../../src/signing/types.js';
import { MAX_NESTED_SIGNATURES, peVerifyOk, verifyPe } from '../../src/signing/verify-pe.js';
import { runCli, tempDir } from '../helpers/env.js';
import { makePki, osslVerify, type TestPki } from '../helpers/pki.js';

const run = promisify(execFile);
const dir = tempDir('marsign-verify-pe-');
const mk = (name: string): string => {
  execFileSync('mkdir', ['-p', join(dir, name)]);
  return join(dir, name);
};
const a = makePki({ dir: mk('a') });
const b = makePki({ dir: mk('b'), cn: 'other vendor' });
const bothCa = join(dir, 'both-ca.pem');
writeFileSync(bothCa, readFileSync(a.caPemPath, 'latin1') + readFileSync(b.caPemPath, 'latin1'));

const has = (tool: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

const sign = (pe: Uint8Array, p: TestPki, digest: 'sha256' | 'sha1') =>
  signPe(pe, { key: p.key, certChainDer: p.chainDer, digest });
const entriesOf = (pe: Uint8Array) => readCertificateTable(pe, parsePe(pe));
const save = (name: string, bytes: Uint8Array): string => {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
};
/** [index, entry, nested, digest, signer CN, status] of each signature. */
const summary = (r: PeVerifyResult) =>
  r.signatures.map((s) => [s.index, s.entry, s.nested, s.digestAlgorithm, s.signer?.subject, s.status]);

/** One image with two table entries: A (sha256) first, B (sha1) second. */
async function twoEntries(): Promise<Uint8Array> {
  const pe = buildPe({ arch: 'x64', name: 'two-entries' });
  const sa = await sign(pe, a, 'sha256');
  const sb = await sign(pe, b, 'sha1');
  return writeCertificateTable(sa, parsePe(sa), [entriesOf(sa)[0]!.data, entriesOf(sb)[0]!.data]);
}

/** The same image with only table entry `i` (osslsigncode reads one-entry tables only). */
function onlyEntry(pe: Uint8Array, i: number): Uint8Array {
  return writeCertificateTable(pe, parsePe(pe), [entriesOf(pe)[i]!.data]);
}

/** Flip a byte in the middle of a SignerInfo's RSA signature (a view into `pe`). */
function flipSignature(pe: Uint8Array, sig: Uint8Array): Uint8Array {
  const out = new Uint8Array(pe);
  const at = sig.byteOffset - pe.byteOffset + (sig.length >> 1);
  out[at]! ^= 0x01;
  return out;
}

/** `sbverify --list`: each table entry's first certificate subject. */
function sbverifyList(path: string): string[] {
  const out = execFileSync('sbverify', ['--list', path], { encoding: 'utf8' });
  return out
    .split(/^signature \d+$/m)
    .slice(1)
    .map((block) => /subject: \/CN=(.+)$/m.exec(block)?.[1] ?? '?');
}

/** `osslsigncode verify`: per "Signature Index", the digest, the signer CN and the verdict. */
async function osslSignatures(path: string, caPem: string) {
  const r = await osslVerify(path, caPem);
  const blocks = r.output.split(/^Signature Index: /m).slice(1);
  return {
    code: r.code,
    output: r.output,
    signatures: blocks.map((blk) => [
      Number(/^(\d+)/.exec(blk)![1]),
      /Message digest algorithm\s*: (\S+)/.exec(blk)![1]!.toLowerCase(),
      /Signer's certificate:[\s\S]*?Subject: \/CN=(.+)/.exec(blk)![1]!.trim(),
      /Signature verification: (\w+)/.exec(blk)![1] === 'ok',
    ]),
  };
}

describe('two WIN_CERTIFICATE entries', () => {
  test('each entry is verified and reported; sbverify and pesign list the same two', async () => {
    const two = await twoEntries();
    const path = save('two.exe', two);
    assert.deepEqual(sbverifyList(path), ['marsign test signer', 'other vendor']);
    if (has('pesign')) {
      const out = execFileSync('pesign', ['-S', '-i', path], { encoding: 'utf8' });
      assert.deepEqual(
        [...out.matchAll(/The signer's common name is (.+)/g)].map((m) => m[1]),
        ['marsign test signer', 'other vendor'],
      );
    }
    const both = verifyPe(two, { caCertsDer: [a.caDer, b.caDer] });
    assert.deepEqual(summary(both), [
      [0, 0, false, 'sha256', 'CN=marsign test signer', 'ok'],
      [1, 1, false, 'sha1', 'CN=other vendor', 'ok'],
    ]);
    assert.equal(peVerifyOk(both), true);
    assert.equal(both.chainValid, true);
    // The primary's fields stay where scripts read them.
    assert.equal(both.digestAlgorithm, 'sha256');
    assert.equal(both.signer?.subject, 'CN=marsign test signer');

    // Only A's CA: entry 1's chain is invalid, and osslsigncode agrees on that entry alone.
    const onlyA = verifyPe(two, { caCertsDer: [a.caDer] });
    assert.deepEqual(
      onlyA.signatures.map((s) => [s.checks.digest.status, s.checks.signature.status, s.checks.chain.status]),
      [
        ['ok', 'ok', 'ok'],
        ['ok', 'ok', 'invalid'],
      ],
    );
    assert.equal(onlyA.chainValid, false);
    assert.equal(peVerifyOk(onlyA), false);
    const oss = await Promise.all(
      [0, 1].map(
        async (i) => (await osslSignatures(save(`two-${i}.exe`, onlyEntry(two, i)), a.caPemPath)).signatures,
      ),
    );
    assert.deepEqual(oss, [
      [[0, 'sha256', 'marsign test signer', true]],
      [[0, 'sha1', 'other vendor', false]],
    ]);
  });

  test('a tampered second entry is invalid by itself; the first stays ok', async () => {
    const two = await twoEntries();
    const second = entriesOf(two)[1]!;
    const sig = parseSignedData(decodeAt(second.data, 0).der).signerInfos[0]!.signature;
    const bad = flipSignature(two, sig);
    const r = verifyPe(bad, { caCertsDer: [a.caDer, b.caDer] });
    assert.deepEqual(
      r.signatures.map((s) => [s.entry, s.checks.signature.status]),
      [
        [0, 'ok'],
        [1, 'invalid'],
      ],
    );
    assert.equal(r.signatureValid, false);
    assert.equal(peVerifyOk(r), false);
    const oss = await osslSignatures(save('two-bad-1.exe', onlyEntry(bad, 1)), bothCa);
    assert.notEqual(oss.code, 0, oss.output);
  });

  test('an entry that is not PKCS#7 SignedData is invalid, not skipped', async () => {
    const two = await twoEntries();
    const out = new Uint8Array(two);
    const at = entriesOf(two)[1]!.offset + 6; // wCertificateType
    out[at] = 0x01; // WIN_CERT_TYPE_X509
    const r = verifyPe(out);
    assert.deepEqual(
      r.signatures.map((s) => [s.entry, s.status]),
      [
        [0, 'not checked'],
        [1, 'invalid'],
      ],
    );
    assert.match(r.problems.join('\n'), /signature 1: malformed signature: PE_BAD_CERT_TABLE: .*type 0x1/);
  });

  test('marsign verify lists each signature with index, entry, digest, signer and status', async () => {
    const path = save('two-cli.exe', await twoEntries());
    const ok = await runCli(['verify', path, '--ca', bothCa, '--json']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const doc = JSON.parse(ok.stdout);
    assert.equal(doc.ok, true);
    assert.equal(doc.status, 'ok');
    assert.deepEqual(
      doc.pe.signatures.map((s: { index: number; entry: number; nested: boolean; status: string }) => [
        s.index,
        s.entry,
        s.nested,
        s.status,
      ]),
      [
        [0, 0, false, 'ok'],
        [1, 1, false, 'ok'],
      ],
    );
    const plain = await runCli(['verify', path, '--ca', a.caPemPath]);
    assert.equal(plain.code, 1, plain.stdout + plain.stderr);
    assert.match(plain.stdout, /PE 2 signatures/);
    assert.match(
      plain.stdout,
      /signature 0 \(entry 0\): digest ok, signature ok, chain ok, .*sha256, signer CN=marsign test signer/,
    );
    assert.match(
      plain.stdout,
      /signature 1 \(entry 1\): digest ok, signature ok, chain INVALID, .*sha1, signer CN=other vendor/,
    );
    assert.match(plain.stdout, /verification: FAILED/);
  });
});

describe('nested signatures (1.3.6.1.4.1.311.2.4.1)', () => {
  /** A signed by us (sha256), then B nested by osslsigncode (sha1). */
  async function nested(name: string): Promise<{ path: string; bytes: Uint8Array }> {
    const input = save(`${name}.in.exe`, await sign(buildPe({ arch: 'x86', name }), a, 'sha256'));
    const path = join(dir, `${name}.exe`);
    await run('osslsigncode', [
      'sign',
      '-nest',
      '-h',
      'sha1',
      '-certs',
      b.certPemPath,
      '-key',
      b.keyPemPath,
      '-in',
      input,
      '-out',
      path,
    ]);
    return { path, bytes: readFileSync(path) };
  }

  test('each nested signature is verified and reported as osslsigncode reports it', async () => {
    const { path, bytes } = await nested('nest');
    const r = verifyPe(bytes, { caCertsDer: [a.caDer, b.caDer] });
    assert.deepEqual(summary(r), [
      [0, 0, false, 'sha256', 'CN=marsign test signer', 'ok'],
      [1, 0, true, 'sha1', 'CN=other vendor', 'ok'],
    ]);
    const oss = await osslSignatures(path, bothCa);
    assert.match(oss.output, /Number of verified signatures: 2/);
    assert.deepEqual(oss.signatures, [
      [0, 'sha256', 'marsign test signer', true],
      [1, 'sha1', 'other vendor', true],
    ]);
    // sbverify lists table entries: one.
    assert.deepEqual(sbverifyList(path), ['marsign test signer']);

    // With A's CA only, the nested signature's chain fails in both (osslsigncode 2.9 still exits 0;
    // we exit 1 because a check we made is invalid).
    const onlyA = verifyPe(bytes, { caCertsDer: [a.caDer] });
    assert.deepEqual(
      onlyA.signatures.map((s) => [s.index, s.checks.chain.status]),
      [
        [0, 'ok'],
        [1, 'invalid'],
      ],
    );
    assert.equal(peVerifyOk(onlyA), false);
    const ossA = await osslSignatures(path, a.caPemPath);
    assert.deepEqual(
      ossA.signatures.map((s) => s[3]),
      [true, false],
    );
    const cli = await runCli(['verify', path, '--ca', a.caPemPath]);
    assert.equal(cli.code, 1, cli.stdout);
    assert.match(cli.stdout, /signature 1 \(entry 0, nested\): digest ok, signature ok, chain INVALID/);
  });

  test('a tampered nested signature is invalid in both verifiers; the primary stays ok', async () => {
    const { bytes } = await nested('nest-bad');
    const outer = parseSignedData(decodeAt(entriesOf(bytes)[0]!.data, 0).der).signerInfos[0]!;
    const value = outer.unsignedAttrs.find((x) => x.oid === OID.spcNestedSignature)!.values[0]!;
    const bad = flipSignature(bytes, parseSignedData(value.der).signerInfos[0]!.signature);
    const r = verifyPe(bad, { caCertsDer: [a.caDer, b.caDer] });
    assert.deepEqual(
      r.signatures.map((s) => [s.nested, s.checks.signature.status]),
      [
        [false, 'ok'],
        [true, 'invalid'],
      ],
    );
    assert.equal(r.signatureValid, false);
    const oss = await osslSignatures(save('nest-bad.exe', bad), bothCa);
    assert.deepEqual(
      oss.signatures.map((s) => s[3]),
      [true, false],
    );
  });

  test(`more than MAX_NESTED_SIGNATURES (${MAX_NESTED_SIGNATURES}) nested values is invalid, not ignored`, async () => {
    const { bytes } = await nested('nest-many');
    const ci = decodeAt(entriesOf(bytes)[0]!.data, 0).der;
    const sd = parseSignedData(ci);
    const si = sd.signerInfos[0]!;
    const value = si.unsignedAttrs.find((x) => x.oid === OID.spcNestedSignature)!.values[0]!.der;
    const many = withUnsignedAttrs(ci, [
      seq(
        oid(OID.spcNestedSignature),
        setOf(...Array.from({ length: MAX_NESTED_SIGNATURES + 1 }, () => value)),
      ),
    ]);
    const r = verifyPe(writeCertificateTable(bytes, parsePe(bytes), [many]));
    assert.equal(r.signatures.length, 2);
    assert.equal(r.signatures[1]!.status, 'invalid');
    assert.match(r.signatures[1]!.problems.join(), /17 nested signatures \(max 16\)/);
    // At the limit every one is checked.
    const atLimit = withUnsignedAttrs(ci, [
      seq(oid(OID.spcNestedSignature), setOf(...Array.from({ length: MAX_NESTED_SIGNATURES }, () => value))),
    ]);
    const r2 = verifyPe(writeCertificateTable(bytes, parsePe(bytes), [atLimit]));
    assert.equal(r2.signatures.length, 1 + MAX_NESTED_SIGNATURES);
    assert.ok(r2.signatures.every((s) => s.checks.signature.status === 'ok'));
  });
});

test('a CA that does not parse is a ConfigError, not a silently unchecked chain', async () => {
  const signed = await sign(buildPe({ arch: 'x64' }), a, 'sha256');
  assert.throws(
    () => verifyPe(signed, { caCertsDer: [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])] }),
    (e: unknown) => e instanceof ConfigError && e.code === 'CERT_INVALID',
  );
});

/** The ContentInfo with the first SignerInfo's unsigned attributes replaced by `attrs`. */
function withUnsignedAttrs(contentInfoDer: Uint8Array, attrs: Uint8Array[]): Uint8Array {
  const sd = parseSignedData(contentInfoDer);
  const si = sd.signerInfos[0]!;
  const unsigned = setOf(...attrs);
  unsigned[0] = ctxTag(1);
  const siParts = children(si.node)
    .filter((n) => n.offset !== si.unsignedAttrsNode?.offset)
    .map((n) => n.der);
  const sdParts = children(sd.signedDataNode);
  const newSd = seq(...sdParts.slice(0, -1).map((n) => n.der), tlv(TAG.SET, seq(...siParts, unsigned)));
  return seq(oid(OID.signedData), explicit(0, newSd));
}
