import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { FormatError } from '../../../src/errors.js';
import {
  authenticodeDigest,
  buildPe,
  computeChecksum,
  isPe,
  parsePe,
  readCertificateTable,
  stripCertificateTable,
  writeCertificateTable,
} from '../../../src/formats/pe/index.js';
import { tempDir } from '../../helpers/env.js';
import { makePki, type TestPki } from '../../helpers/pki.js';

function expectFormatError(fn: () => unknown, code: string): FormatError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof FormatError, `expected FormatError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.format, 'pe');
  return caught;
}

const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at, true);
function setU32(b: Uint8Array, at: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(at, v, true);
}

describe('parsePe on synthetic images', () => {
  test('PE32 (x86) and PE32+ (x64) headers and offsets', () => {
    const x86 = parsePe(buildPe({ arch: 'x86' }));
    assert.equal(x86.pe32plus, false);
    assert.equal(x86.machine, 0x14c);
    assert.equal(x86.checksumOffset, x86.peOffset + 88);
    assert.equal(x86.certDirOffset, x86.peOffset + 152);
    assert.equal(x86.numberOfRvaAndSizes, 16);
    assert.equal(x86.certTable, undefined);
    assert.deepEqual(
      x86.sections.map((s) => s.name),
      ['.text', '.rdata'],
    );
    const x64 = parsePe(buildPe({ arch: 'x64', kind: 'dll' }));
    assert.equal(x64.pe32plus, true);
    assert.equal(x64.machine, 0x8664);
    assert.equal(x64.certDirOffset, x64.peOffset + 168);
    assert.equal(x64.characteristics & 0x2000, 0x2000);
  });

  test('buildPe is deterministic, carries the payload and a valid checksum', () => {
    const a = buildPe({ arch: 'x64', payload: new TextEncoder().encode('de'), name: 'de' });
    assert.deepEqual(a, buildPe({ arch: 'x64', payload: new TextEncoder().encode('de'), name: 'de' }));
    assert.notDeepEqual(a, buildPe({ arch: 'x64', payload: new TextEncoder().encode('fr'), name: 'fr' }));
    const info = parsePe(a);
    assert.equal(info.checksum, computeChecksum(a, info.checksumOffset));
    assert.notEqual(info.checksum, 0);
    const big = buildPe({ arch: 'x86', payload: new Uint8Array(5000).fill(7) });
    const rdata = parsePe(big).sections[1]!;
    assert.equal(rdata.sizeOfRawData % 0x200, 0);
    assert.ok(rdata.sizeOfRawData >= 5000);
    assert.ok(Buffer.from(big).includes(Buffer.alloc(5000, 7)));
  });

  test('isPe sniffs without throwing', () => {
    assert.equal(isPe(buildPe({ arch: 'x86' })), true);
    assert.equal(isPe(new TextEncoder().encode('#!/bin/sh\necho not a PE\n'.repeat(4))), false);
    assert.equal(isPe(new Uint8Array(0)), false);
    assert.equal(isPe(buildPe({ arch: 'x86' }).subarray(0, 0x40)), false);
  });
});

describe('hostile and unsupported input → typed errors', () => {
  test('a non-PE file named .exe: PE_NOT_PE', () => {
    const e = expectFormatError(
      () => parsePe(new TextEncoder().encode('<html>setup.exe</html>'.repeat(10))),
      'PE_NOT_PE',
    );
    assert.equal(e.offset, 0);
    assert.match(e.message, /3c68/); // the bytes found
  });

  test('MZ with a wrong PE signature: PE_NOT_PE at e_lfanew', () => {
    const b = buildPe({ arch: 'x86' });
    b[0x80] = 0x4e; // "NE"
    assert.equal(expectFormatError(() => parsePe(b), 'PE_NOT_PE').offset, 0x80);
  });

  test('truncated PE files: PE_TRUNCATED', () => {
    const b = buildPe({ arch: 'x64' });
    for (const n of [20, 0x60, 0x84, 0x100, 0x1a0])
      expectFormatError(() => parsePe(b.subarray(0, n)), 'PE_TRUNCATED');
    const far = buildPe({ arch: 'x64' });
    setU32(far, 0x3c, far.length + 100);
    assert.equal(expectFormatError(() => parsePe(far), 'PE_TRUNCATED').offset, 0x3c);
  });

  test('unknown optional header magic: PE_UNSUPPORTED_MAGIC', () => {
    const b = buildPe({ arch: 'x86' });
    b[0x80 + 24] = 0x07; // 0x107 ROM image
    expectFormatError(() => parsePe(b), 'PE_UNSUPPORTED_MAGIC');
  });

  test('fewer than 5 data directories (no room for the certificate table): PE_NO_CERT_DIRECTORY', () => {
    const b = buildPe({ arch: 'x86' });
    setU32(b, 0x80 + 116, 4);
    const e = expectFormatError(() => parsePe(b), 'PE_NO_CERT_DIRECTORY');
    assert.equal(e.offset, 0x80 + 116);
    assert.match(e.message, /is 4/);
  });

  test('optional header too small for the directory entry: PE_NO_CERT_DIRECTORY', () => {
    const b = buildPe({ arch: 'x64' });
    b[0x80 + 20] = 136; // SizeOfOptionalHeader ends before data directory #4
    expectFormatError(() => parsePe(b), 'PE_NO_CERT_DIRECTORY');
  });

  test('certificate table not at EOF, past EOF, or malformed', () => {
    const signed = writeCertificateTable(buildPe({ arch: 'x86' }), parsePe(buildPe({ arch: 'x86' })), [
      new Uint8Array(30).fill(0x30),
    ]);
    const info = parsePe(signed);
    assert.deepEqual(info.certTable, { offset: 0x600, size: 40 });
    const appended = new Uint8Array(signed.length + 16);
    appended.set(signed);
    const e = expectFormatError(() => parsePe(appended), 'PE_CERT_TABLE_NOT_AT_EOF');
    assert.equal(e.offset, info.certDirOffset);
    expectFormatError(() => parsePe(signed.subarray(0, signed.length - 8)), 'PE_BAD_CERT_TABLE');
    const overlapping = new Uint8Array(signed);
    setU32(overlapping, info.certDirOffset, 0x10);
    setU32(overlapping, info.certDirOffset + 4, signed.length - 0x10);
    expectFormatError(() => parsePe(overlapping), 'PE_BAD_CERT_TABLE');
    const badLength = new Uint8Array(signed);
    setU32(badLength, 0x600, 4000);
    const te = expectFormatError(
      () => readCertificateTable(badLength, parsePe(badLength)),
      'PE_BAD_CERT_TABLE',
    );
    assert.equal(te.offset, 0x600);
  });
});

describe('certificate table write/read/strip', () => {
  test('entries are padded to 8 with the padding counted in dwLength; directory holds the file offset', () => {
    const pe = buildPe({ arch: 'x64' });
    const odd = new Uint8Array(pe.length + 3);
    odd.set(pe);
    odd[pe.length] = 0xaa; // trailing data after the last section, odd length
    const info = parsePe(odd);
    const out = writeCertificateTable(odd, info, [new Uint8Array(13).fill(1), new Uint8Array(16).fill(2)]);
    const oi = parsePe(out);
    assert.equal(oi.certTable!.offset, pe.length + 8);
    assert.deepEqual(out.subarray(pe.length + 1, pe.length + 8), new Uint8Array(7));
    assert.equal(u32(out, oi.certDirOffset), pe.length + 8);
    const entries = readCertificateTable(out, oi);
    assert.deepEqual(
      entries.map((e) => [e.length, e.revision, e.certificateType, e.data.length]),
      [
        [24, 0x200, 2, 16],
        [24, 0x200, 2, 16],
      ],
    );
    assert.equal(oi.checksum, computeChecksum(out, oi.checksumOffset));
    assert.equal(out.buffer.byteLength, out.length, 'own ArrayBuffer, transferable');

    const stripped = stripCertificateTable(out, oi);
    const si = parsePe(stripped);
    assert.equal(si.certTable, undefined);
    assert.equal(stripped.length, pe.length + 8);
    assert.deepEqual(
      stripped.subarray(0, odd.length),
      (() => {
        const x = new Uint8Array(odd);
        setU32(x, info.checksumOffset, si.checksum);
        return x;
      })(),
    );
    // The digest of the padded, stripped image equals the digest of the unsigned odd-length input.
    assert.deepEqual(authenticodeDigest(out, oi), authenticodeDigest(odd, info));
    assert.deepEqual(authenticodeDigest(stripped, si), authenticodeDigest(odd, info));
  });

  test('the digest skips CheckSum and the directory entry but covers everything else', () => {
    const pe = buildPe({ arch: 'x86' });
    const info = parsePe(pe);
    const d = authenticodeDigest(pe, info);
    const changed = (at: number): boolean => {
      const b = new Uint8Array(pe);
      b[at] = b[at]! ^ 0xff;
      return !authenticodeDigest(b, info).equals(d);
    };
    assert.equal(changed(info.checksumOffset + 2), false);
    assert.equal(changed(info.certDirOffset + 5), false);
    for (const at of [
      0,
      0x3c,
      info.checksumOffset - 1,
      info.checksumOffset + 4,
      info.certDirOffset - 1,
      info.certDirOffset + 8,
      0x200,
      pe.length - 1,
    ])
      assert.equal(changed(at), true, `byte ${at}`);
    assert.equal(authenticodeDigest(pe, info, 'sha1').length, 20);
  });
});

describe('agreement with osslsigncode', () => {
  const dir = tempDir();
  let pki: TestPki;
  before(() => {
    pki = makePki({ dir });
  });

  for (const hash of ['sha256', 'sha1'] as const) {
    test(`image digest (${hash}) equals osslsigncode's on its own signed output and on the unsigned input`, () => {
      const input = join(dir, `in-${hash}.exe`);
      const pe = buildPe({ arch: 'x64', payload: new Uint8Array(1001).fill(3) });
      const odd = new Uint8Array(pe.length + 5);
      odd.set(pe);
      odd.fill(0x5a, pe.length); // trailing data, length not a multiple of 8
      writeFileSync(input, odd);
      const output = join(dir, `out-${hash}.exe`);
      execFileSync(
        'osslsigncode',
        ['sign', '-h', hash, '-certs', pki.certPemPath, '-key', pki.keyPemPath, '-in', input, '-out', output],
        { stdio: 'pipe' },
      );
      const text = execFileSync('osslsigncode', ['verify', '-CAfile', pki.caPemPath, '-in', output], {
        encoding: 'utf8',
      });
      const m = text.match(/Current message digest\s*:\s*([0-9A-F]+)/);
      assert.ok(m, text);
      const signed = readFileSync(output);
      assert.equal(authenticodeDigest(signed, parsePe(signed), hash).toString('hex').toUpperCase(), m[1]);
      assert.equal(authenticodeDigest(odd, parsePe(odd), hash).toString('hex').toUpperCase(), m[1]);
      // and osslsigncode's checksum of its output is the one we compute
      const ck = text.match(/PE checksum\s*:\s*([0-9A-F]+)/);
      assert.ok(ck, text);
      assert.equal(computeChecksum(signed, parsePe(signed).checksumOffset), parseInt(ck[1]!, 16));
    });
  }
});
