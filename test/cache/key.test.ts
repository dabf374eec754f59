import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertCacheKey, cacheKey } from '../../cache/key.js';
import type { CacheKeyParts } from '../../cache/types.js';

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
