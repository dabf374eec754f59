import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compilePolicy } from '../../src/pipeline/policy.js';

test('default policy signs .exe and .dll anywhere, case-insensitively, and nothing else', () => {
  const p = compilePolicy(undefined);
  for (const n of ['firefox.exe', 'xul.dll', 'a/b/c/updater.EXE', 'distribution/x.Dll', '.hidden/y.dll'])
    assert.equal(p.decide(n), 'sign', n);
  for (const n of ['omni.ja', 'update.manifest', 'exe', 'a.exe.sig', 'dll/readme.txt', 'firefox.exe/x'])
    assert.equal(p.decide(n), 'passthrough', n);
  assert.equal(p.onInvalid, 'error');
});

test('exclude globs win over include', () => {
  const p = compilePolicy({ exclude: ['**/vendor-*.dll', 'd3dcompiler_47.dll'] });
  assert.equal(p.decide('d3dcompiler_47.dll'), 'passthrough');
  assert.equal(p.decide('gmp/vendor-codec.dll'), 'passthrough');
  assert.equal(p.decide('xul.dll'), 'sign');
});

test('custom include replaces the default', () => {
  const p = compilePolicy({ include: ['bin/*.exe'], onInvalid: 'skip' });
  assert.equal(p.decide('bin/a.exe'), 'sign');
  assert.equal(p.decide('a.exe'), 'passthrough');
  assert.equal(p.decide('bin/x/a.exe'), 'passthrough');
  assert.equal(p.onInvalid, 'skip');
});

test('bad policy values are ConfigError CONFIG_BAD_POLICY naming the value', () => {
  for (const bad of [{ include: 'x.exe' }, { include: [''] }, { exclude: [3] }, { onInvalid: 'ignore' }]) {
    assert.throws(
      () => compilePolicy(bad as never),
      (e: Error & { code?: string }) => e.name === 'ConfigError' && e.code === 'CONFIG_BAD_POLICY',
      JSON.stringify(bad),
    );
  }
});

test('verifyPassthrough: on by default, off when the config says so, anything else refused', () => {
  assert.equal(compilePolicy(undefined).verifyPassthrough, true);
  assert.equal(compilePolicy({ verifyPassthrough: false }).verifyPassthrough, false);
  assert.throws(() => compilePolicy({ verifyPassthrough: 'no' as unknown as boolean }), {
    code: 'CONFIG_BAD_POLICY',
  });
});
