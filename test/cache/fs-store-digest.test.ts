import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsCacheStore, HEADER_SIZE } from '../../cache/fs-store.js';
import { tempDir } from '../helpers/env.js';

const key = (n: number): string => createHash('sha256').update(`k${n}`).digest('hex');

test('getWithSha256 returns the verified payload and its sha256; has()/payloadSize() are unverified hints', async () => {
  const store = new FsCacheStore({ root: join(tempDir(), 'c'), hmacSecret: randomBytes(32) });
  const payload = randomBytes(300_000);
  assert.equal(await store.has(key(1)), false);
  assert.equal(await store.getWithSha256(key(1)), undefined);
  await store.put(key(1), payload);
  assert.equal(await store.has(key(1)), true);
  assert.equal(await store.payloadSize(key(1)), payload.length);
  assert.equal(await store.payloadSize(key(2)), undefined);
  const got = await store.getWithSha256(key(1));
  assert.ok(got);
  assert.deepEqual(Buffer.from(got.payload), payload);
  assert.equal(got.sha256, createHash('sha256').update(payload).digest('hex'));
  assert.deepEqual(Buffer.from((await store.get(key(1)))!), payload);

  // A flipped payload byte: has() still says present (no verification), get() refuses and counts it.
  const fd = openSync(store.entryPath(key(1)), 'r+');
  writeSync(fd, Buffer.from([payload[10]! ^ 0xff]), 0, 1, HEADER_SIZE + 10);
  closeSync(fd);
  assert.equal(await store.has(key(1)), true);
  assert.equal(await store.getWithSha256(key(1)), undefined);
  assert.equal(store.corruptSeen, 1);
  assert.equal((await store.stats()).corrupt, 1);
  assert.equal(await store.has(key(1)), false);
});
