import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertCacheKey, cacheKey, outputCacheKey } from '../../cache/key.js';
import type { CacheKeyParts, OutputKeyParts } from '../../cache/types.js';

const base: CacheKeyParts = {
  signerFingerprint: 'ab'.repeat(32),
  codecSettings: 'bzip2:9',
  inputSha256: '01'.repeat(32),
};

test('cacheKey is a stable lowercase hex sha256', () => {
  const k = cacheKey(base);
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.equal(cacheKey({ ...base }), k);
});

test('every part changes the key', () => {
  const k = cacheKey(base);
  assert.notEqual(cacheKey({ ...base, signerFingerprint: 'ac'.repeat(32) }), k);
  assert.notEqual(cacheKey({ ...base, codecSettings: 'bzip2:8' }), k);
  assert.notEqual(cacheKey({ ...base, inputSha256: '02'.repeat(32) }), k);
});

test('field boundaries are unambiguous (length-prefixed)', () => {
  const a = cacheKey({ ...base, signerFingerprint: 'abcd', codecSettings: 'xz' });
  const b = cacheKey({ ...base, signerFingerprint: 'ab', codecSettings: 'cdxz' });
  assert.notEqual(a, b);
});

test('bad parts are refused with CACHE_BAD_KEY_PART', () => {
  const bad: Partial<CacheKeyParts>[] = [
    { signerFingerprint: '' },
    { signerFingerprint: 'ABCD' },
    { signerFingerprint: 'abc' },
    { signerFingerprint: 'zz' },
    { signerFingerprint: 'a'.repeat(258) },
    { codecSettings: '' },
    { codecSettings: 'x'.repeat(5000) },
    { inputSha256: '01'.repeat(31) },
    { inputSha256: 'AB'.repeat(32) },
    { inputSha256: '../'.repeat(21) + 'a' },
  ];
  for (const b of bad)
    assert.throws(
      () => cacheKey({ ...base, ...b }),
      (e: { code?: string }) => e.code === 'CACHE_BAD_KEY_PART',
      JSON.stringify(b),
    );
  assert.throws(() => cacheKey({ ...base, inputSha256: 5 as unknown as string }), {
    code: 'CACHE_BAD_KEY_PART',
  });
});

test('assertCacheKey accepts only 64 lowercase hex digits', () => {
  assertCacheKey(cacheKey(base));
  for (const k of [
    '',
    '../etc/passwd',
    'A'.repeat(64),
    'a'.repeat(63),
    'a'.repeat(65),
    `${'a'.repeat(62)}/x`,
  ])
    assert.throws(() => assertCacheKey(k), { code: 'CACHE_BAD_KEY' });
});

const out: OutputKeyParts = {
  inputSha256: '03'.repeat(32),
  signerFingerprint: 'ab'.repeat(32),
  marKeys: ['cd'.repeat(32)],
  marAlgorithm: 'sha384',
  policy: { include: ['**/*.exe', '**/*.dll'], exclude: [], onInvalid: 'error' },
  toolVersion: '0.1.0',
};

test('outputCacheKey is a stable hex sha256, distinct from any entry key', () => {
  const k = outputCacheKey(out);
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.equal(outputCacheKey({ ...out, policy: { ...out.policy }, marKeys: [...out.marKeys] }), k);
  assert.notEqual(
    k,
    cacheKey({ signerFingerprint: out.signerFingerprint, codecSettings: 'x', inputSha256: out.inputSha256 }),
  );
});

test('every part of an output key changes it', () => {
  const k = outputCacheKey(out);
  const variants: [string, OutputKeyParts][] = [
    ['input', { ...out, inputSha256: '04'.repeat(32) }],
    ['authenticode signer', { ...out, signerFingerprint: 'ac'.repeat(32) }],
    ['MAR key', { ...out, marKeys: ['ce'.repeat(32)] }],
    ['second MAR key', { ...out, marKeys: [...out.marKeys, 'ef'.repeat(32)] }],
    ['MAR key order', { ...out, marKeys: ['ef'.repeat(32), 'cd'.repeat(32)] }],
    ['no MAR signature', { ...out, marKeys: [], marAlgorithm: null }],
    ['MAR algorithm', { ...out, marAlgorithm: 'sha1' }],
    ['include', { ...out, policy: { ...out.policy, include: ['**/*.exe'] } }],
    ['exclude', { ...out, policy: { ...out.policy, exclude: ['vendor/**'] } }],
    ['onInvalid', { ...out, policy: { ...out.policy, onInvalid: 'skip' } }],
    ['marsign version', { ...out, toolVersion: '0.1.1' }],
  ];
  // Pairwise distinct too ('second MAR key' and 'MAR key order' hold the same keys in two orders).
  const seen = new Set([k]);
  for (const [what, parts] of variants) {
    const v = outputCacheKey(parts);
    assert.ok(!seen.has(v), `${what} must change the key`);
    seen.add(v);
  }
});

test('output key lists are unambiguous (a glob cannot move from include to exclude unnoticed)', () => {
  const a = outputCacheKey({ ...out, policy: { include: ['a', 'b'], exclude: [], onInvalid: 'error' } });
  const b = outputCacheKey({ ...out, policy: { include: ['a'], exclude: ['b'], onInvalid: 'error' } });
  const c = outputCacheKey({ ...out, policy: { include: ['ab'], exclude: [], onInvalid: 'error' } });
  assert.equal(new Set([a, b, c]).size, 3);
});

test('bad output key parts are refused with CACHE_BAD_KEY_PART', () => {
  const bad: Partial<OutputKeyParts>[] = [
    { inputSha256: 'AB'.repeat(32) },
    { inputSha256: '../'.repeat(21) + 'a' },
    { signerFingerprint: 'xyz' },
    { marKeys: ['nothex'] },
    { marKeys: 'ab' as unknown as string[] },
    { marAlgorithm: 'SHA 384' },
    { marAlgorithm: null },
    { policy: { include: [''], exclude: [], onInvalid: 'error' } },
    { policy: { include: [], exclude: [], onInvalid: 'maybe' as 'skip' } },
    { toolVersion: '' },
  ];
  for (const b of bad)
    assert.throws(
      () => outputCacheKey({ ...out, ...b }),
      (e: { code?: string }) => e.code === 'CACHE_BAD_KEY_PART',
      JSON.stringify(b),
    );
});
