import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AuthorityError,
  FormatError,
  TransientError,
  ConfigError,
  fromPlainError,
  isRetryable,
  PolicyError,
  toPlainError,
} from '../src/errors.js';
import { Cursor } from '../src/formats/cursor.js';

test('typed errors survive a plain-data boundary with name, code and offset', () => {
  const e = new FormatError('mar', 'MAR_BAD_MAGIC', 'bad magic "ABCD"', 0);
  const plain = JSON.parse(JSON.stringify(toPlainError(e)));
  const back = fromPlainError(plain);
  assert.ok(back instanceof FormatError);
  assert.equal(back.code, 'MAR_BAD_MAGIC');
  assert.equal((back as FormatError).offset, 0);
  assert.equal(back.message, e.message);
});

test('retry classification: transient and network errors retry, format/config do not', () => {
  assert.equal(isRetryable(new TransientError('TSA_UNAVAILABLE', 'down')), true);
  assert.equal(isRetryable(Object.assign(new Error('x'), { code: 'ECONNRESET' })), true);
  assert.equal(isRetryable(new FormatError('pe', 'PE_NOT_PE', 'no MZ')), false);
  assert.equal(isRetryable(new ConfigError('CONFIG_INVALID', 'bad')), false);
  assert.equal(isRetryable(toPlainError(new TransientError('X', 'y'))), true);
  // A timestamp authority's bad reply: final, and typed across a thread or job boundary.
  const bad = fromPlainError(
    JSON.parse(JSON.stringify(toPlainError(new AuthorityError('TSA_BAD_REPLY', 'x')))),
  );
  assert.ok(bad instanceof AuthorityError);
  assert.equal(isRetryable(bad), false);
});

test('cursor reads big- and little-endian values and refuses to run past the end', () => {
  const c = new Cursor(Uint8Array.from([0, 0, 1, 2, 0x34, 0x12, 0x41, 0x00]), 'mar', 100, 'MAR_TRUNCATED');
  assert.equal(c.u32be(), 0x102);
  assert.equal(c.u16le(), 0x1234);
  assert.deepEqual([...c.cstring(10)], [0x41]);
  assert.throws(
    () => c.u8(),
    (e: unknown) => e instanceof FormatError && e.code === 'MAR_TRUNCATED' && e.offset === 108,
  );
});

test('namingEntry: the entry first in the message and in details, class and code kept, never twice', async () => {
  const { namingEntry } = await import('../src/errors.js');
  const { outputDigests } = await import('../src/pipeline/report.js');
  const codec = new FormatError('bz2', 'CODEC_CORRUPT', 'libbzip2: BZ_DATA_ERROR');
  const named = namingEntry(codec, 'x/y.dll') as FormatError;
  assert.ok(named instanceof FormatError);
  assert.equal(named.code, 'CODEC_CORRUPT');
  assert.equal(named.message, 'entry "x/y.dll": libbzip2: BZ_DATA_ERROR');
  assert.equal(named.details?.entry, 'x/y.dll');
  // Across a thread boundary (plain object) and named again: unchanged.
  const plain = toPlainError(named);
  assert.equal(namingEntry(plain, 'x/y.dll'), plain);
  // A message that already starts with the name is not prefixed; the entry still goes in details.
  const policy = namingEntry(new PolicyError('POLICY_NOT_PE', 'a.exe matches the signing policy'), 'a.exe');
  assert.equal((policy as PolicyError).message, 'a.exe matches the signing policy');
  assert.equal((policy as PolicyError).details?.entry, 'a.exe');
  // A one-letter name inside other words is not mistaken for naming the entry.
  assert.equal(
    (namingEntry(new FormatError('xz', 'CODEC_CORRUPT', 'bad data'), 'a') as Error).message,
    'entry "a": bad data',
  );

  // Manifests written before camelCase (a remote server, a file) are read under either name.
  const base = { entries: [], totals: {} } as never as Parameters<typeof outputDigests>[0];
  assert.deepEqual(outputDigests({ ...base, output_sha256: 'aa', output_sha512: 'bb' }), {
    sha256: 'aa',
    sha512: 'bb',
  });
  assert.deepEqual(outputDigests({ ...base, outputSha256: 'cc', output_sha256: 'aa' }), { sha256: 'cc' });
});
