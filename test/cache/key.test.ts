import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertCacheKey, cacheKey, checkKey, outputCacheKey } from '../../cache/key.js';
import type { CacheKeyParts, CheckKeyParts, OutputKeyParts } from '../../cache/types.js';

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
  verifyPassthrough: true,
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
    // An output made without checking its passthrough entries is never served to a run that checks them.
    ['passthrough check off', { ...out, verifyPassthrough: false }],
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
    { verifyPassthrough: 'yes' as unknown as boolean },
  ];
  for (const b of bad)
    assert.throws(
      () => outputCacheKey({ ...out, ...b }),
      (e: { code?: string }) => e.code === 'CACHE_BAD_KEY_PART',
      JSON.stringify(b),
    );
});

const chk: CheckKeyParts = {
  inputSha256: '05'.repeat(32),
  codecSettings: 'bz2:9',
  maxEntrySize: 1024,
  maxCompressionRatio: 1000,
  expect: null,
};

test('every part of a passthrough check key changes it, and it is no other kind of key', () => {
  const k = checkKey(chk);
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.equal(checkKey({ ...chk }), k);
  const variants: [string, CheckKeyParts][] = [
    ['stored bytes', { ...chk, inputSha256: '06'.repeat(32) }],
    ['codec', { ...chk, codecSettings: 'bz2:8' }],
    ['size bound', { ...chk, maxEntrySize: 1025 }],
    ['ratio bound', { ...chk, maxCompressionRatio: Infinity }],
    ['declared facts', { ...chk, expect: { size: 1, crc32: 2 } }],
    ['declared CRC', { ...chk, expect: { size: 1, crc32: 3 } }],
  ];
  const seen = new Set([
    k,
    cacheKey({ signerFingerprint: 'ab', codecSettings: 'bz2:9', inputSha256: chk.inputSha256 }),
  ]);
  for (const [what, parts] of variants) {
    const v = checkKey(parts);
    assert.ok(!seen.has(v), `${what} must change the key`);
    seen.add(v);
  }
  for (const b of [
    { inputSha256: 'x' },
    { codecSettings: '' },
    { maxEntrySize: -1 },
    { maxCompressionRatio: 0 },
    { expect: { size: 1, crc32: 2 ** 32 } },
  ] as Partial<CheckKeyParts>[])
    assert.throws(() => checkKey({ ...chk, ...b }), { code: 'CACHE_BAD_KEY_PART' }, JSON.stringify(b));
});
