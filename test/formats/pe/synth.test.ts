import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { UsageError } from '../../../src/errors.js';
import { buildPe, parsePe } from '../../../src/formats/pe/index.js';
import { signPe } from '../../../src/signing/authenticode.js';
import { peVerifyOk, verifyPe } from '../../../src/signing/verify-pe.js';
import { tempDir } from '../../helpers/env.js';
import { makePki, osslOk, osslVerify } from '../../helpers/pki.js';

describe('buildPe output is accepted by osslsigncode and by our signer', () => {
  const dir = tempDir();
  const pki = makePki({ dir });
  for (const arch of ['x86', 'x64'] as const) {
    for (const kind of ['exe', 'dll'] as const) {
      test(`${arch} ${kind}`, async () => {
        const pe = buildPe({
          arch,
          kind,
          name: `${arch}-${kind}`,
          payload: new TextEncoder().encode(`locale ${arch}`),
        });
        const info = parsePe(pe);
        assert.equal(info.pe32plus, arch === 'x64');
        const input = join(dir, `${arch}.${kind}`);
        writeFileSync(input, pe);

        const byOssl = join(dir, `${arch}-ossl.${kind}`);
        execFileSync(
          'osslsigncode',
          ['sign', '-certs', pki.certPemPath, '-key', pki.keyPemPath, '-in', input, '-out', byOssl],
          { stdio: 'pipe' },
        );
        assert.ok(osslOk(await osslVerify(byOssl, pki.caPemPath)));

        const ours = await signPe(pe, { key: pki.key, certChainDer: pki.chainDer, digest: 'sha256' });
        const byUs = join(dir, `${arch}-ours.${kind}`);
        writeFileSync(byUs, ours);
        const r = await osslVerify(byUs, pki.caPemPath);
        assert.ok(osslOk(r), r.output);
        assert.doesNotMatch(r.output, /invalid PE checksum/);
        assert.ok(peVerifyOk(verifyPe(ours, { caCertsDer: [pki.caDer] })));
      });
    }
  }

  test('bad options are usage errors', () => {
    assert.throws(
      () => buildPe({ arch: 'arm' as 'x86' }),
      (e: unknown) => e instanceof UsageError && e.code === 'PE_SYNTH_BAD_OPTION',
    );
    assert.throws(() => buildPe({ arch: 'x64', kind: 'sys' as 'exe' }), UsageError);
  });
});
