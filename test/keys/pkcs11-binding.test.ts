import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildPe } from '../../src/formats/pe/synth.js';
import { runCli, tempDir } from '../helpers/env.js';

test('without the pkcs11js binding a pkcs11: key is PKCS11_BINDING_MISSING (exit 2), file keys still work', async () => {
  const dir = tempDir();
  const pe = join(dir, 'in.exe');
  writeFileSync(pe, buildPe({ arch: 'x64', kind: 'exe', name: 'no-binding' }));
  const cfg = join(dir, 'marsign.config.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      // Any existing file passes the load-time check; the binding is missing before the module is opened.
      pkcs11: { module: process.execPath },
      profiles: { p: { mar: { keys: ['pkcs11:token=t;object=k'], pinEnv: 'X_PIN' } } },
    }),
  );
  const env = {
    NODE_OPTIONS: `--import ${join(import.meta.dirname, 'fixtures', 'no-pkcs11js.mjs')}`,
    X_PIN: '1234',
  };
  const r = await runCli(
    ['sign-mar', join(dir, 'x.mar'), '-o', join(dir, 'y.mar'), '--profile', 'p', '--config', cfg],
    {
      env,
    },
  );
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /marsign: PKCS11_BINDING_MISSING: profile "p": mar\.keys\[0\]: pkcs11:token=t;object=k: .*pkcs11js/,
  );
  const dev = join(dir, 'dev');
  assert.equal((await runCli(['keys', 'dev', '--out', dev], { env })).code, 0);
  const s = await runCli(
    [
      'sign-pe',
      pe,
      '-o',
      join(dir, 'out.exe'),
      '--profile',
      'dev',
      '--config',
      join(dev, 'marsign.config.json'),
    ],
    { env },
  );
  assert.equal(s.code, 0, s.stderr);
});
