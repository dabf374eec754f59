/**
 * Hostile input: random truncations and byte changes in headers and in the signature must produce
 * typed errors (parsePe) or an invalid verdict with problems (verifyPe), never anything else.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CodedError, FormatError } from '../../../src/errors.js';
import { children, decode, decodeAt } from '../../../src/formats/asn1/der.js';
import { parseSignedData } from '../../../src/formats/asn1/pkcs7.js';
import { buildPe, parsePe, readCertificateTable } from '../../../src/formats/pe/index.js';
import { signPe } from '../../../src/signing/authenticode.js';
import { peVerifyOk, verifyPe } from '../../../src/signing/verify-pe.js';
import { makePki, mapLimit, osslOk, osslVerify } from '../../helpers/pki.js';
import { tempDir } from '../../helpers/env.js';

const pki = makePki({ dir: tempDir() });

describe('malformed PE and signature input', () => {
  test('parsePe on truncated or mutated headers throws only FormatError', () => {
    const pe = buildPe({ arch: 'x64', kind: 'dll', payload: new Uint8Array(100).fill(1) });
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: pe.length }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 0x1ff }), fc.integer({ min: 0, max: 255 })), {
          maxLength: 8,
        }),
        (len, edits) => {
          const b = new Uint8Array(pe.subarray(0, len));
          for (const [at, v] of edits) if (at < b.length) b[at] = v;
          try {
            const info = parsePe(b);
            readCertificateTable(b, info);
          } catch (e) {
            if (!(e instanceof FormatError)) throw e;
            assert.equal(e.format, 'pe');
            assert.match(e.code, /^PE_/);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('every 1-bit change in the signature DER: verifyPe never throws and agrees with osslsigncode', async () => {
    const dir = tempDir();
    const signed = await signPe(buildPe({ arch: 'x86' }), {
      key: pki.key,
      certChainDer: pki.chainDer,
      digest: 'sha256',
    });
    const [entry] = readCertificateTable(signed, parsePe(signed));
    const derStart = entry!.offset + 8;
    const derLen = decodeAt(entry!.data, 0).der.length;
    const accepted: Uint8Array[] = [];
    const rejected: Uint8Array[] = [];
    for (let i = 0; i < derLen; i++) {
      const b = new Uint8Array(signed);
      b[derStart + i] = b[derStart + i]! ^ 0x01;
      const r = verifyPe(b, { caCertsDer: [pki.caDer] });
      if (peVerifyOk(r)) accepted.push(b);
      else {
        assert.ok(r.problems.length > 0);
        rejected.push(b);
      }
    }
    // Changes we accept must be ones osslsigncode accepts too (a version number or NULL-parameter
    // tag nobody checks); a sample of the rest must be rejected by it as well.
    assert.ok(accepted.length < 16, `${accepted.length} accepted`);
    const sample = [...accepted, ...rejected.filter((_, i) => i % 50 === 0)];
    const verdicts = await mapLimit(sample, 2, async (b, i) => {
      const p = join(dir, `flip-${i}.exe`);
      writeFileSync(p, b);
      return osslOk(await osslVerify(p, pki.caPemPath));
    });
    assert.deepEqual(
      verdicts,
      sample.map((_, i) => i < accepted.length),
    );
  });

  test('DER decoder rejects indefinite, oversized and overrunning lengths with ASN1_* codes', () => {
    const codes = (b: number[]): string => {
      try {
        children(decode(Uint8Array.from(b)));
        return 'ok';
      } catch (e) {
        assert.ok(e instanceof CodedError);
        return e.code;
      }
    };
    assert.equal(codes([0x30, 0x80, 0, 0]), 'ASN1_INDEFINITE_LENGTH');
    assert.equal(codes([0x30, 0x85, 1, 0, 0, 0, 0]), 'ASN1_BAD_LENGTH');
    assert.equal(codes([0x30, 0x05, 0x02, 0x01]), 'ASN1_TRUNCATED');
    assert.equal(codes([0x30, 0x03, 0x02, 0x05, 0x00]), 'ASN1_TRUNCATED');
    assert.equal(codes([0x30, 0x00, 0x00]), 'ASN1_TRAILING_DATA');
    assert.equal(codes([0x1f, 0x01, 0x00]), 'ASN1_UNSUPPORTED_TAG');
    assert.throws(
      () => parseSignedData(Uint8Array.from([0x30, 0x03, 0x06, 0x01, 0x2a])),
      (e: unknown) => e instanceof FormatError && e.code === 'PKCS7_MALFORMED',
    );
  });
});
