/**
 * The locale-output tier of FsCacheStore: `<key>.out` files (header + meta + the output MAR bytes),
 * streamed to a sink while verified; tampering is a counted, removed miss, as for signed entries.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
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
import {
  FsCacheStore,
  OUTPUT_CHUNK,
  OUTPUT_HEADER_SIZE,
  type CacheEntryProblem,
} from '../../cache/fs-store.js';
import { cacheKey } from '../../cache/key.js';
import type { OutputHit } from '../../cache/types.js';
import { tempDir } from '../helpers/env.js';

const SECRET = new Uint8Array(randomBytes(32));

function keyOf(n: number): string {
  return cacheKey({
    signerFingerprint: 'cd'.repeat(32),
    codecSettings: 'locale',
    inputSha256: n.toString(16).padStart(64, '0'),
  });
}

/** Deterministic bytes over several chunks, with a partial last chunk. */
function outputOf(n: number, size = 3 * OUTPUT_CHUNK + 12_345): Buffer {
  const b = Buffer.allocUnsafe(size);
  let s = n + 1;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

const sha = (alg: string, b: Uint8Array): string => createHash(alg).update(b).digest('hex');

async function put(store: FsCacheStore, key: string, payload: Buffer, meta = '{"v":1}'): Promise<void> {
  // sha512 as a promise: the pipeline hands it over while its side thread is still computing it.
  await store.putOutput(key, payload, {
    sha256: sha('sha256', payload),
    sha512: Promise.resolve(sha('sha512', payload)),
    meta: Buffer.from(meta),
  });
}

/** getOutput into a memory sink that records the writes. */
async function get(
  store: FsCacheStore,
  key: string,
): Promise<{ hit: OutputHit | undefined; bytes: Buffer; writes: number }> {
  const parts: { pos: number; data: Buffer }[] = [];
  const hit = await store.getOutput(key, async (chunk, pos) => {
    parts.push({ pos, data: Buffer.from(chunk) }); // copied: the store reuses its chunk buffers
  });
  const size = parts.reduce((n, p) => Math.max(n, p.pos + p.data.length), 0);
  const bytes = Buffer.alloc(size);
  for (const p of parts) p.data.copy(bytes, p.pos);
  return { hit, bytes, writes: parts.length };
}

function logged(root: string, secret: Uint8Array = SECRET) {
  const problems: CacheEntryProblem[] = [];
  const store = new FsCacheStore({ root, hmacSecret: secret, onBadEntry: (_k, p) => void problems.push(p) });
  return { store, problems };
}

test('putOutput/getOutput round trip: every byte through the sink, digests and meta as stored', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const key = keyOf(1);
  const payload = outputOf(1);
  assert.equal(await store.hasOutput(key), false);
  assert.equal((await get(store, key)).hit, undefined);
  await put(store, key, payload, '{"v":1,"entries":[]}');
  const path = join(root, key.slice(0, 2), `${key}.out`);
  assert.equal(store.outputPath(key), path);
  assert.equal(statSync(path).size, OUTPUT_HEADER_SIZE + 20 + payload.length);
  assert.equal(await store.hasOutput(key), true);
  // The entry namespace is separate: the same key is no signed entry.
  assert.equal(await store.get(key), undefined);

  const { hit, bytes, writes } = await get(store, key);
  assert.ok(hit);
  assert.ok(bytes.equals(payload));
  assert.equal(writes, 4, 'streamed in OUTPUT_CHUNK pieces');
  assert.equal(hit.size, payload.length);
  assert.equal(hit.sha256, sha('sha256', payload));
  assert.equal(hit.sha512, sha('sha512', payload));
  assert.equal(Buffer.from(hit.meta).toString(), '{"v":1,"entries":[]}');

  // An empty output streams nothing and still verifies.
  await put(store, keyOf(2), Buffer.alloc(0));
  const empty = await get(store, keyOf(2));
  assert.equal(empty.hit?.size, 0);
  assert.equal(empty.hit?.sha256, sha('sha256', Buffer.alloc(0)));

  const s = await store.stats();
  assert.equal(s.entries, 2);
  assert.deepEqual(s.byKind, {
    entry: { entries: 0, bytes: 0 },
    output: { entries: 2, bytes: s.bytes },
  });
  assert.deepEqual(s.outputs, { hits: 2, misses: 1, corrupt: 0, puts: 2 });
  assert.equal(s.hits + s.misses, 1, 'the get() of the entry namespace');
  const v = await store.verify();
  assert.deepEqual(v, { checked: 2, ok: 2, bad: [] });
  assert.deepEqual(
    readdirSync(join(root, key.slice(0, 2))).filter((n) => n.startsWith('.')),
    [],
    'no temp files left',
  );
});

test('a bad output entry is a counted miss, removed; the sink saw bytes it must discard', async () => {
  const cases: [string, CacheEntryProblem, (path: string, root: string) => void][] = [
    [
      'flipped payload byte',
      'payload-sha256',
      (p) => {
        const b = readFileSync(p);
        b[b.length - 5]! ^= 0x10;
        writeFileSync(p, b);
      },
    ],
    [
      'flipped meta byte',
      'meta-sha256',
      (p) => {
        const b = readFileSync(p);
        b[OUTPUT_HEADER_SIZE + 2]! ^= 0x01;
        writeFileSync(p, b);
      },
    ],
    ['truncated', 'truncated', (p) => writeFileSync(p, readFileSync(p).subarray(0, 5000))],
    [
      'appended byte',
      'size-mismatch',
      (p) => writeFileSync(p, Buffer.concat([readFileSync(p), Buffer.of(0)])),
    ],
    [
      'edited sha512 in the header',
      'hmac',
      (p) => {
        const b = readFileSync(p);
        b[0x60]! ^= 0x01;
        writeFileSync(p, b);
      },
    ],
    [
      'a signed-entry file under an output name',
      'bad-magic',
      (p) => {
        const b = readFileSync(p);
        b.write('MARSCACH', 0, 'latin1');
        writeFileSync(p, b);
      },
    ],
  ];
  for (const [what, problem, tamper] of cases) {
    const root = tempDir();
    const { store, problems } = logged(root);
    const key = keyOf(3);
    const payload = outputOf(3);
    await put(store, key, payload);
    tamper(store.outputPath(key), root);
    const r = await get(store, key);
    assert.equal(r.hit, undefined, what);
    assert.deepEqual(problems, [problem], what);
    assert.equal(existsSync(store.outputPath(key)), false, `${what}: removed`);
    const s = await store.stats();
    assert.deepEqual(s.outputs, { hits: 0, misses: 1, corrupt: 1, puts: 1 }, what);
    assert.equal(s.corrupt, 1, `${what}: counted with the store's corrupt entries`);
    // Repaired by the next put.
    await put(store, key, payload);
    assert.ok((await get(store, key)).bytes.equals(payload), `${what}: repaired`);
  }
});

test('another secret, or a file moved to another key, is refused', async () => {
  const root = tempDir();
  const a = new FsCacheStore({ root, hmacSecret: SECRET });
  await put(a, keyOf(4), outputOf(4, 5000));
  await put(a, keyOf(5), outputOf(5, 5000));
  const other = logged(root, new Uint8Array(randomBytes(32)));
  assert.equal((await get(other.store, keyOf(4))).hit, undefined);
  assert.deepEqual(other.problems, ['hmac']);

  const mine = logged(root);
  await put(mine.store, keyOf(4), outputOf(4, 5000));
  // A valid entry file renamed to another key's name (its prefix directory created as put would).
  const moved = mine.store.outputPath(keyOf(6));
  mkdirSync(join(root, keyOf(6).slice(0, 2)), { recursive: true });
  renameSync(mine.store.outputPath(keyOf(5)), moved);
  assert.equal((await get(mine.store, keyOf(6))).hit, undefined);
  assert.deepEqual(mine.problems, ['key-mismatch']);
  assert.ok((await get(mine.store, keyOf(4))).hit, 'the untouched entry still serves');
});

test('verify checks output entries (incl. the stored sha512) and repair removes bad ones', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const good = outputOf(7, 70_000);
  await put(store, keyOf(7), good);
  // A writer that stored a wrong sha512 (HMAC'd, so only verify's own sha512 pass can tell).
  await store.putOutput(keyOf(8), good, {
    sha256: sha('sha256', good),
    sha512: sha('sha512', Buffer.from('something else')),
    meta: Buffer.from('{}'),
  });
  await store.put(keyOf(9), new Uint8Array(100).fill(9));
  const v = await store.verify();
  assert.equal(v.checked, 3);
  assert.equal(v.ok, 2);
  assert.deepEqual(v.bad, [{ key: keyOf(8), kind: 'output', reason: 'payload-sha512' }]);
  const r = await store.verify({ repair: true });
  assert.equal(r.bad.length, 1);
  assert.equal(existsSync(store.outputPath(keyOf(8))), false);
  assert.deepEqual((await store.verify()).bad, []);
});

test('prune orders signed entries and outputs on one LRU clock', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  await put(store, keyOf(10), outputOf(10, 10_000));
  await store.put(keyOf(11), new Uint8Array(10_000));
  await put(store, keyOf(12), outputOf(12, 10_000));
  const t = Date.now() / 1000;
  utimesSync(store.outputPath(keyOf(10)), t - 300, t - 300);
  utimesSync(store.entryPath(keyOf(11)), t - 200, t - 200);
  utimesSync(store.outputPath(keyOf(12)), t - 100, t - 100);
  const total = (await store.stats()).bytes;
  const r = await store.prune(total - 1);
  assert.equal(r.removed, 1);
  assert.equal(await store.hasOutput(keyOf(10)), false, 'the oldest (an output) goes first');
  const r2 = await store.prune(statSync(store.outputPath(keyOf(12))).size);
  assert.equal(r2.removed, 1);
  assert.equal(await store.has(keyOf(11)), false, 'then the older signed entry');
  assert.equal(await store.hasOutput(keyOf(12)), true);
});

test('a failing sink propagates its error and leaves the entry in place', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  await put(store, keyOf(13), outputOf(13));
  const err = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
  await assert.rejects(
    store.getOutput(keyOf(13), async (_c, pos) => {
      if (pos > 0) throw err;
    }),
    (e: { code?: string }) => e.code === 'ENOSPC',
  );
  assert.deepEqual(problems, []);
  assert.ok((await get(store, keyOf(13))).hit);
});

test('putOutput validates its inputs', async () => {
  const store = new FsCacheStore({ root: tempDir(), hmacSecret: SECRET });
  const p = outputOf(14, 100);
  await assert.rejects(
    store.putOutput(keyOf(14), p, { sha256: 'AB', sha512: sha('sha512', p), meta: Buffer.from('{}') }),
    { code: 'CACHE_BAD_PAYLOAD' },
  );
  await assert.rejects(
    store.putOutput(keyOf(14), p, { sha256: sha('sha256', p), sha512: 'nope', meta: Buffer.from('{}') }),
    { code: 'CACHE_BAD_PAYLOAD' },
  );
  assert.equal(await store.hasOutput(keyOf(14)), false, 'nothing left behind');
  await assert.rejects(
    store.putOutput('../x', p, {
      sha256: sha('sha256', p),
      sha512: sha('sha512', p),
      meta: Buffer.from('{}'),
    }),
    { code: 'CACHE_BAD_KEY' },
  );
});
