import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSize, parseSize } from '../../cache/size.js';

test('parseSize understands bytes, binary and decimal units', () => {
  assert.equal(parseSize('1024'), 1024);
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize('10B'), 10);
  assert.equal(parseSize('500M'), 500 * 1024 * 1024);
  assert.equal(parseSize('500m'), 500 * 1024 * 1024);
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('4k'), 4096);
  assert.equal(parseSize('300MB'), 300_000_000);
  assert.equal(parseSize('1T'), 1024 ** 4);
  assert.equal(parseSize(' 7 MiB '), 7 * 1024 * 1024);
  assert.equal(parseSize('1.0001K'), 1024);
});

test('parseSize refuses garbage with a UsageError BAD_SIZE naming the value', () => {
  for (const s of ['', 'M', '-5M', '5Q', '1.2.3G', 'abc', '5 M B', '0x10', '1e3', '99999999999999T']) {
    assert.throws(
      () => parseSize(s),
      (e: Error & { code?: string }) =>
        e.name === 'UsageError' && e.code === 'BAD_SIZE' && e.message.includes(JSON.stringify(s)),
      s,
    );
  }
});

test('formatSize', () => {
  assert.equal(formatSize(0), '0 B');
  assert.equal(formatSize(1023), '1023 B');
  assert.equal(formatSize(1536), '1.50 KiB');
  assert.equal(formatSize(500 * 1024 * 1024), '500.0 MiB');
});
