import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsCacheStore, HEADER_SIZE, STALE_TEMP_MS, type CacheEntryProblem } from '../../cache/fs-store.js';
import { cacheKey } from '../../cache/key.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

const SECRET = new Uint8Array(randomBytes(32));

function keyOf(n: number): string {
  return cacheKey({
    signerFingerprint: 'ab'.repeat(32),
    codecSettings: 'bzip2:9',
    inputSha256: n.toString(16).padStart(64, '0'),
  });
}

function payloadOf(n: number, size = 1000 + n * 37): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + n * 7) & 0xff;
  return out;
}

function storeWithLog(root: string, secret: Uint8Array = SECRET) {
  const problems: CacheEntryProblem[] = [];
  const store = new FsCacheStore({ root, hmacSecret: secret, onBadEntry: (_k, p) => void problems.push(p) });
  return { store, problems };
}

function leftovers(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith('.')) : [];
}

test('put/get round trip, layout, counters, transferable payload', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const key = keyOf(1);
  assert.equal(await store.get(key), undefined);
  const payload = payloadOf(1, 70_000);
  await store.put(key, payload);
  const path = join(root, key.slice(0, 2), key);
  assert.equal(statSync(path).size, HEADER_SIZE + payload.length);
  assert.equal(store.entryPath(key), path);
  const got = (await store.get(key))?.payload;
  assert.ok(got);
  assert.deepEqual(got, payload);
  // Its own ArrayBuffer, not a slice of Node's pool: transferable to a worker without copying others' bytes.
  assert.equal(got.byteOffset, 0);
  assert.equal(got.buffer.byteLength, payload.length);
  structuredClone(got, { transfer: [got.buffer as ArrayBuffer] });

  await store.put(keyOf(2), new Uint8Array(0));
  assert.deepEqual((await store.get(keyOf(2)))?.payload, new Uint8Array(0));
  const s = await store.stats();
  assert.deepEqual(s, {
    root,
    entries: 2,
    bytes: 2 * HEADER_SIZE + payload.length,
    hits: 2,
    misses: 1,
    corrupt: 0,
    puts: 2,
    byKind: {
      entry: { entries: 2, bytes: 2 * HEADER_SIZE + payload.length },
      signature: { entries: 0, bytes: 0 },
      output: { entries: 0, bytes: 0 },
      blob: { entries: 0, bytes: 0 },
      check: { entries: 0, bytes: 0 },
    },
    outputs: { hits: 0, misses: 0, corrupt: 0, puts: 0 },
  });
  assert.deepEqual(leftovers(join(root, key.slice(0, 2))), []);
});

test('options and keys are validated', async () => {
  assert.throws(() => new FsCacheStore({ root: tempDir(), hmacSecret: new Uint8Array(15) }), {
    name: 'ConfigError',
    code: 'CACHE_SECRET_TOO_SHORT',
  });
  assert.throws(
    () => new FsCacheStore({ root: tempDir(), hmacSecret: 'x'.repeat(32) as unknown as Uint8Array }),
    {
      name: 'ConfigError',
      code: 'CACHE_BAD_SECRET',
    },
  );
  assert.throws(() => new FsCacheStore({ root: '', hmacSecret: SECRET }), { code: 'CACHE_BAD_ROOT' });
  const store = new FsCacheStore({ root: tempDir(), hmacSecret: SECRET });
  await assert.rejects(store.get('../../etc/passwd'), { code: 'CACHE_BAD_KEY' });
  await assert.rejects(store.put('AB'.repeat(32), new Uint8Array(1)), { code: 'CACHE_BAD_KEY' });
  await assert.rejects(store.put(keyOf(1), 'text' as unknown as Uint8Array), { code: 'CACHE_BAD_PAYLOAD' });
  await assert.rejects(store.prune(-1), { code: 'CACHE_BAD_MAX_SIZE' });
  await assert.rejects(store.prune(1.5), { code: 'CACHE_BAD_MAX_SIZE' });
});

type Tamper = (ctx: { root: string; key: string; path: string; store: FsCacheStore }) => Promise<void> | void;

function edit(path: string, fn: (b: Buffer) => Buffer | void): void {
  const b = readFileSync(path);
  writeFileSync(path, fn(b) ?? b);
}

const otherKey = keyOf(999);

const tampers: [string, CacheEntryProblem, Tamper][] = [
  [
    'flipped payload byte',
    'payload-sha256',
    ({ path }) => edit(path, (b) => void (b[HEADER_SIZE + 500]! ^= 1)),
  ],
  [
    'flipped last payload byte',
    'payload-sha256',
    ({ path }) => edit(path, (b) => void (b[b.length - 1]! ^= 0x80)),
  ],
  ['flipped magic byte', 'bad-magic', ({ path }) => edit(path, (b) => void (b[0]! ^= 1))],
  [
    'flipped byte of the stored payload sha256',
    'hmac',
    ({ path }) => edit(path, (b) => void (b[0x40]! ^= 1)),
  ],
  ['flipped HMAC byte', 'hmac', ({ path }) => edit(path, (b) => void (b[0x70]! ^= 1))],
  ['flipped decoded-facts byte', 'hmac', ({ path }) => edit(path, (b) => void (b[0x60]! ^= 1))],
  ['length made larger', 'truncated', ({ path }) => edit(path, (b) => void (b[0x17]! ^= 0x80))],
  ['length made smaller', 'size-mismatch', ({ path }) => edit(path, (b) => void (b[0x17]! ^= 1))],
  ['truncated payload', 'truncated', ({ path }) => edit(path, (b) => b.subarray(0, b.length - 1))],
  ['truncated header', 'truncated', ({ path }) => edit(path, (b) => b.subarray(0, 40))],
  ['empty file', 'truncated', ({ path }) => writeFileSync(path, '')],
  ['trailing bytes', 'size-mismatch', ({ path }) => edit(path, (b) => Buffer.concat([b, Buffer.from([0])]))],
  [
    'written with another HMAC secret',
    'hmac',
    async ({ root, key }) => {
      await new FsCacheStore({ root, hmacSecret: new Uint8Array(randomBytes(32)) }).put(key, payloadOf(7));
    },
  ],
  [
    'another format version (header otherwise genuine, HMAC recomputed)',
    'version',
    ({ path }) =>
      edit(path, (b) => {
        b.writeUInt32BE(1, 0x08);
        createHmac('sha256', SECRET).update(b.subarray(0, 0x68)).digest().copy(b, 0x68);
      }),
  ],
  [
    'file renamed to another key',
    'key-mismatch',
    ({ root, path }) => {
      mkdirSync(join(root, otherKey.slice(0, 2)), { recursive: true });
      renameSync(path, join(root, otherKey.slice(0, 2), otherKey));
    },
  ],
  [
    'renamed to another key with the key field rewritten (no secret)',
    'hmac',
    ({ root, path }) => {
      edit(path, (b) => void b.write(otherKey, 0x18, 'hex'));
      mkdirSync(join(root, otherKey.slice(0, 2)), { recursive: true });
      renameSync(path, join(root, otherKey.slice(0, 2), otherKey));
    },
  ],
];

for (const [name, problem, tamper] of tampers) {
  test(`tampered entry is a counted miss, removed, then replaced: ${name}`, async () => {
    const root = tempDir();
    const { store, problems } = storeWithLog(root);
    const key = keyOf(3);
    const payload = payloadOf(3);
    await store.put(key, payload);
    const path = store.entryPath(key);
    await tamper({ root, key, path, store });
    const victim = existsSync(path) ? key : otherKey;
    const victimPath = store.entryPath(victim);
    assert.ok(existsSync(victimPath));
    assert.equal(await store.get(victim), undefined);
    assert.deepEqual(problems, [problem]);
    const s = await store.stats();
    assert.equal(s.corrupt, 1);
    assert.equal(s.misses, 1);
    assert.equal(s.hits, 0);
    assert.equal(existsSync(victimPath), false, 'bad entry removed');
    assert.deepEqual(leftovers(join(root, victim.slice(0, 2))), [], 'no quarantine file left');
    assert.equal(await store.get(victim), undefined);
    assert.equal((await store.stats()).corrupt, 1, 'a removed entry is a plain miss afterwards');
    await store.put(victim, payload);
    assert.deepEqual((await store.get(victim))?.payload, payload);
  });
}

test('a directory where an entry should be is a corrupt miss, removed (with its contents), replaced by the next put', async () => {
  const root = tempDir();
  const { store, problems } = storeWithLog(root);
  const key = keyOf(4);
  mkdirSync(join(store.entryPath(key), 'sub'), { recursive: true });
  writeFileSync(join(store.entryPath(key), 'sub', 'f'), 'x');
  assert.equal(await store.get(key), undefined);
  assert.deepEqual(problems, ['not-a-file']);
  assert.equal((await store.stats()).corrupt, 1);
  assert.equal(existsSync(store.entryPath(key)), false);
  assert.deepEqual(leftovers(join(root, key.slice(0, 2))), []);
  await store.put(key, payloadOf(4));
  assert.deepEqual((await store.get(key))?.payload, payloadOf(4));
});

test('removing a bad entry never deletes a good one another process renamed in meanwhile', async () => {
  const root = tempDir();
  const key = keyOf(5);
  const payload = payloadOf(5);
  const secretHex = Buffer.from(SECRET).toString('hex');
  // Between our read of the bad file and its removal, a separate process puts a good entry.
  const putter = `
    import { FsCacheStore } from ${JSON.stringify(join(PROJECT_ROOT, 'cache/fs-store.ts'))};
    const n = 5, size = 1000 + n * 37, p = new Uint8Array(size);
    for (let i = 0; i < size; i++) p[i] = (i * 31 + n * 7) & 0xff;
    await new FsCacheStore({ root: process.argv[1], hmacSecret: Buffer.from(process.argv[2], 'hex') }).put(process.argv[3], p);
  `;
  let calls = 0;
  const store = new FsCacheStore({
    root,
    hmacSecret: SECRET,
    onBadEntry: () => {
      calls++;
      execFileSync(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', putter, root, secretHex, key],
        {
          cwd: PROJECT_ROOT,
        },
      );
    },
  });
  await store.put(key, payload);
  edit(store.entryPath(key), (b) => void (b[HEADER_SIZE]! ^= 1));
  assert.equal(await store.get(key), undefined);
  assert.equal(calls, 1);
  assert.ok(existsSync(store.entryPath(key)), 'the fresh entry survived');
  assert.deepEqual((await store.get(key))?.payload, payload);
  assert.deepEqual(leftovers(join(root, key.slice(0, 2))), []);
  assert.deepEqual(await store.verify(), { checked: 1, ok: 1, bad: [], unsafe: [] });
});

test('verify reports bad entries by key and reason; repair removes them', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  for (let n = 10; n < 15; n++)
    await store.put(keyOf(n), payloadOf(n, n === 14 ? 3 * 1024 * 1024 + 5 : undefined));
  edit(store.entryPath(keyOf(10)), (b) => void (b[b.length - 1]! ^= 1));
  edit(store.entryPath(keyOf(11)), (b) => b.subarray(0, 100));
  edit(store.entryPath(keyOf(14)), (b) => void (b[HEADER_SIZE + 2 * 1024 * 1024]! ^= 1)); // in a later chunk
  // A well-named entry in the wrong prefix directory can never be found by get.
  const stray = keyOf(12).replace(/^../, (p) => (p === 'ff' ? 'fe' : 'ff'));
  mkdirSync(join(root, stray.slice(0, 2)), { recursive: true });
  writeFileSync(join(root, stray.slice(0, 2), keyOf(12)), readFileSync(store.entryPath(keyOf(12))));
  // Files that are not entries are ignored.
  writeFileSync(join(root, '.hmac-secret'), 'ab'.repeat(32));
  writeFileSync(join(root, 'README'), 'x');
  mkdirSync(join(root, 'zz'));
  writeFileSync(join(root, keyOf(13).slice(0, 2), 'notes.txt'), 'x');

  const sortBad = (r: { bad: { key: string; reason: string }[] }) =>
    [...r.bad].sort((a, b) => (a.key + a.reason < b.key + b.reason ? -1 : 1));
  const expected = sortBad({
    bad: [
      { key: keyOf(10), reason: 'payload-sha256' },
      { key: keyOf(11), reason: 'truncated' },
      { key: keyOf(14), reason: 'payload-sha256' },
      { key: keyOf(12), reason: 'misplaced' },
    ],
  });
  const r1 = await store.verify();
  assert.equal(r1.checked, 6);
  assert.equal(r1.ok, 2);
  assert.deepEqual(sortBad(r1), expected);
  assert.ok(existsSync(store.entryPath(keyOf(10))), 'verify without repair changes nothing');

  const r2 = await store.verify({ repair: true });
  assert.deepEqual(sortBad(r2), expected);
  assert.equal(existsSync(store.entryPath(keyOf(10))), false);
  assert.equal(existsSync(join(root, stray.slice(0, 2), keyOf(12))), false);
  const r3 = await store.verify();
  assert.deepEqual(r3, { checked: 2, ok: 2, bad: [], unsafe: [] });
  assert.equal((await store.stats()).corrupt, 0, 'verify does not count get-time corruption');
  assert.ok(existsSync(join(root, '.hmac-secret')));
});

test('leftover temp files are never served, ignored by stats/verify, cleaned when old', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const key = keyOf(20);
  await store.put(keyOf(21), payloadOf(21));
  const before = await store.stats();
  // What a writer that crashed before rename leaves: a complete-looking entry under its temp name.
  const dir = join(root, key.slice(0, 2));
  mkdirSync(dir, { recursive: true });
  const other = new FsCacheStore({ root: tempDir(), hmacSecret: SECRET });
  await other.put(key, payloadOf(20));
  const oldTemp = join(dir, `.${key}.4242.a1b2c3d4e5f6.tmp`);
  const freshTemp = join(dir, `.${key}.4243.a1b2c3d4e5f7.tmp`);
  const oldBad = join(dir, `.${key}.4244.a1b2c3d4e5f8.bad`);
  for (const p of [oldTemp, freshTemp, oldBad]) writeFileSync(p, readFileSync(other.entryPath(key)));
  const old = (Date.now() - STALE_TEMP_MS - 60_000) / 1000;
  utimesSync(oldTemp, old, old);
  utimesSync(oldBad, old, old);

  assert.equal(await store.get(key), undefined);
  const s = await store.stats();
  assert.equal(s.entries, before.entries);
  assert.equal(s.bytes, before.bytes);
  assert.equal(s.corrupt, 0);
  assert.deepEqual(await store.verify(), { checked: 1, ok: 1, bad: [], unsafe: [] });
  assert.ok(existsSync(oldTemp));

  const r = await store.verify({ repair: true });
  assert.equal(r.staleTempRemoved, 2);
  assert.equal(existsSync(oldTemp), false);
  assert.equal(existsSync(oldBad), false);
  assert.ok(existsSync(freshTemp), 'a temp file young enough to be an in-flight write is kept');

  utimesSync(freshTemp, old, old);
  const p = await store.prune(1 << 30);
  assert.equal(p.staleTempRemoved, 1);
  assert.equal(p.removed, 0);
  assert.equal(existsSync(freshTemp), false);
});

test('prune removes least recently used first; a hit refreshes recency', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const size = 1000;
  const entry = HEADER_SIZE + size;
  const t0 = Date.now() / 1000 - 10 * 3600;
  for (let n = 0; n < 6; n++) {
    await store.put(keyOf(30 + n), payloadOf(30 + n, size));
    utimesSync(store.entryPath(keyOf(30 + n)), t0 + n * 60, t0 + n * 60); // 30 oldest … 35 newest
  }
  // A hit on the oldest makes it the most recent.
  assert.ok(await store.get(keyOf(30)));
  assert.ok(statSync(store.entryPath(keyOf(30))).mtimeMs > (t0 + 3600) * 1000);
  // A hit on an entry touched under a minute ago leaves its mtime alone (no write per hit).
  const recent = Date.now() / 1000 - 10;
  utimesSync(store.entryPath(keyOf(35)), recent, recent);
  const m35 = statSync(store.entryPath(keyOf(35))).mtimeMs;
  assert.ok(await store.get(keyOf(35)));
  assert.equal(statSync(store.entryPath(keyOf(35))).mtimeMs, m35);

  const none = await store.prune(10 * entry);
  assert.deepEqual(none, { removed: 0, freedBytes: 0, remainingBytes: 6 * entry, staleTempRemoved: 0 });

  const r = await store.prune(3 * entry + 10);
  assert.deepEqual(r, { removed: 3, freedBytes: 3 * entry, remainingBytes: 3 * entry, staleTempRemoved: 0 });
  const present = [30, 31, 32, 33, 34, 35].filter((n) => existsSync(store.entryPath(keyOf(n))));
  assert.deepEqual(present, [30, 34, 35]);

  const all = await store.prune(0);
  assert.equal(all.removed, 3);
  assert.equal(all.remainingBytes, 0);
  assert.equal((await store.stats()).entries, 0);
});

test('a missing root is an empty cache, not an error', async () => {
  const store = new FsCacheStore({ root: join(tempDir(), 'absent'), hmacSecret: SECRET });
  assert.equal((await store.stats()).entries, 0);
  assert.deepEqual(await store.verify({ repair: true }), {
    checked: 0,
    ok: 0,
    bad: [],
    unsafe: [],
    staleTempRemoved: 0,
  });
  assert.equal((await store.prune(0)).removed, 0);
  assert.equal(await store.get(keyOf(1)), undefined);
});
