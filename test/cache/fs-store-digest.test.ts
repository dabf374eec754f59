import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsCacheStore, HEADER_SIZE } from '../../cache/fs-store.js';
import { tempDir } from '../helpers/env.js';

const key = (n: number): string => createHash('sha256').update(`k${n}`).digest('hex');

test('get returns the verified payload and its sha256; has()/payloadSize() are unverified hints', async () => {
  const store = new FsCacheStore({ root: join(tempDir(), 'c'), hmacSecret: randomBytes(32) });
  const payload = randomBytes(300_000);
  assert.equal(await store.has(key(1)), false);
  assert.equal(await store.get(key(1)), undefined);
  await store.put(key(1), payload);
  assert.equal(await store.has(key(1)), true);
  assert.equal(await store.payloadSize(key(1)), payload.length);
  assert.equal(await store.payloadSize(key(2)), undefined);
  const got = await store.get(key(1));
  assert.ok(got);
  assert.deepEqual(Buffer.from(got.payload), payload);
  assert.equal(got.sha256, createHash('sha256').update(payload).digest('hex'));

  // A flipped payload byte: has() still says present (no verification), get() refuses and counts it.
  const fd = openSync(store.entryPath(key(1)), 'r+');
  writeSync(fd, Buffer.from([payload[10]! ^ 0xff]), 0, 1, HEADER_SIZE + 10);
  closeSync(fd);
  assert.equal(await store.has(key(1)), true);
  assert.equal(await store.get(key(1)), undefined);
  assert.equal(store.corruptSeen, 1);
  assert.equal((await store.stats()).corrupt, 1);
  assert.equal(await store.has(key(1)), false);
});

test('decoded facts are stored with an entry, authenticated, and come back with get and readInto', async () => {
  const store = new FsCacheStore({ root: join(tempDir(), 'c'), hmacSecret: randomBytes(32) });
  const payload = randomBytes(5000);
  await store.put(key(1), payload, { size: 123_456_789_012, crc32: 0xdeadbeef });
  await store.put(key(2), payload);
  assert.deepEqual((await store.get(key(1)))?.facts, { size: 123_456_789_012, crc32: 0xdeadbeef });
  assert.equal((await store.get(key(2)))?.facts, undefined);
  const into = new Uint8Array(payload.length);
  assert.deepEqual((await store.readInto(key(1), into))?.facts, { size: 123_456_789_012, crc32: 0xdeadbeef });
  await assert.rejects(store.put(key(3), payload, { size: -1, crc32: 0 }), { code: 'CACHE_BAD_PAYLOAD' });
  await assert.rejects(store.put(key(3), payload, { size: 1, crc32: 2 ** 32 }), {
    code: 'CACHE_BAD_PAYLOAD',
  });

  // The facts are under the HMAC: editing the stored CRC makes the entry bad (a miss, removed).
  const fd = openSync(store.entryPath(key(1)), 'r+');
  writeSync(fd, Buffer.from([0x00]), 0, 1, 0x5c);
  closeSync(fd);
  assert.equal(await store.get(key(1)), undefined);
  assert.equal(store.corruptSeen, 1);
});

test('PE signatures are stored beside the entries as <key>.sig, verified, and counted as their own kind', async () => {
  const root = join(tempDir(), 'c');
  const store = new FsCacheStore({ root, hmacSecret: randomBytes(32) });
  const der = randomBytes(1500);
  assert.equal(await store.getSignature(key(1)), undefined);
  await store.putSignature(key(1), der);
  await store.put(key(1), randomBytes(10), { size: 1, crc32: 1 });
  assert.deepEqual(
    Buffer.from((await store.getSignature(key(1)))!),
    der,
    'the same key holds both kinds apart',
  );
  const s = await store.stats();
  assert.deepEqual(s.byKind?.signature, { entries: 1, bytes: HEADER_SIZE + der.length });
  assert.equal(s.byKind?.entry.entries, 1);
  const fd = openSync(store.signaturePath(key(1)), 'r+');
  writeSync(fd, Buffer.from([der[0]! ^ 1]), 0, 1, HEADER_SIZE);
  closeSync(fd);
  const report = await store.verify();
  assert.deepEqual(report.bad, [{ key: key(1), kind: 'signature', reason: 'payload-sha256' }]);
  assert.equal(await store.getSignature(key(1)), undefined, 'a bad signature is a miss');
  assert.ok((await store.get(key(1)))?.payload, 'the entry beside it is untouched');
});
