import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir } from '../helpers/env.js';

test('marsign keys dev writes a labelled TEST-ONLY set and refuses to overwrite it without --force', async () => {
  const out = join(tempDir('marsign-cli-keys-'), 'dev');
  const r = await runCli(['keys', 'dev', '--out', out, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.ok, true);
  assert.equal(doc.testOnly, true);
  for (const k of [
    'caCert',
    'codeSigningChain',
    'codeSigningKey',
    'marKey',
    'marCert',
    'marCertDer',
    'tsaCert',
    'tsaKey',
    'config',
  ]) {
    assert.ok(existsSync(doc[k]), `${k} written`);
  }
  assert.match(readFileSync(doc.caCert, 'utf8'), /BEGIN CERTIFICATE/);
  const again = await runCli(['keys', 'dev', '--out', out]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /marsign: DEV_KEYS_EXIST:/);
  const human = await runCli(['keys', 'dev', '--out', out, '--force']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /TEST-ONLY keys written/);
  const bad = await runCli(['keys', 'dev', '--out', out, '--force', '--mar-key-bits', '1024']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /BAD_KEY_SIZE/);
});
