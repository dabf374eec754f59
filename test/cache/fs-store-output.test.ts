/**
 * The locale-output tier of FsCacheStore: `<key>.out` (header + meta) beside `<key>.mar` (the output MAR
 * bytes: a hard link to the output file when possible, else a copy), streamed to a sink while verified;
 * tampering with either file is a counted miss that removes both, as for signed entries.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  FsCacheStore,
  OUTPUT_CHUNK,
  OUTPUT_HEADER_SIZE,
  STALE_TEMP_MS,
  type CacheEntryProblem,
} from '../../cache/fs-store.js';
import { cacheKey } from '../../cache/key.js';
import { OUTPUT_FORMAT_VERSION, type OutputHit } from '../../cache/types.js';
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

async function put(
  store: FsCacheStore,
  key: string,
  payload: Buffer,
  meta = '{"v":1}',
  linkFrom?: string,
): Promise<{ linked: boolean }> {
  // sha512 as a promise: the pipeline hands it over while its side thread is still computing it.
  return store.putOutput(
    key,
    payload,
    {
      sha256: sha('sha256', payload),
      sha512: Promise.resolve(sha('sha512', payload)),
      meta: Buffer.from(meta),
    },
    linkFrom === undefined ? {} : { linkFrom },
  );
}

/** Files whose name starts with a dot (temps, quarantined files) in the key's prefix directory. */
function dotFiles(root: string, key: string): string[] {
  const dir = join(root, key.slice(0, 2));
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith('.')) : [];
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
  assert.deepEqual(await put(store, key, payload, '{"v":1,"entries":[]}'), { linked: false });
  const path = join(root, key.slice(0, 2), `${key}.out`);
  assert.equal(store.outputPath(key), path);
  assert.equal(store.payloadPath(key), join(root, key.slice(0, 2), `${key}.mar`));
  assert.equal(statSync(path).size, OUTPUT_HEADER_SIZE + 20, 'header and meta only');
  assert.ok(
    readFileSync(store.payloadPath(key)).equals(payload),
    'the payload file is the bytes, nothing else',
  );
  assert.equal(statSync(store.payloadPath(key)).nlink, 1, 'no linkFrom: a copy');
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
  assert.equal(s.entries, 2, 'each .out/.mar pair is one entry');
  assert.equal(
    s.bytes,
    OUTPUT_HEADER_SIZE + 20 + payload.length + OUTPUT_HEADER_SIZE + 7,
    'both files of both pairs',
  );
  assert.deepEqual(s.byKind, {
    entry: { entries: 0, bytes: 0 },
    signature: { entries: 0, bytes: 0 },
    output: { entries: 2, bytes: s.bytes },
    blob: { entries: 0, bytes: 0 },
    check: { entries: 0, bytes: 0 },
  });
  assert.deepEqual(s.outputs, { hits: 2, misses: 1, corrupt: 0, puts: 2 });
  assert.equal(s.hits + s.misses, 1, 'the get() of the entry namespace');
  const v = await store.verify();
  assert.deepEqual(v, { checked: 2, ok: 2, bad: [], unsafe: [] });
  assert.deepEqual(
    readdirSync(join(root, key.slice(0, 2))).filter((n) => n.startsWith('.')),
    [],
    'no temp files left',
  );
});

test('a bad output entry (either file) is a counted miss, both files removed; the sink saw bytes it must discard', async () => {
  const flip = (at: (b: Buffer) => number) => (p: string) => {
    const b = readFileSync(p);
    b[at(b)]! ^= 0x10;
    writeFileSync(p, b);
  };
  type Tamper = [string, CacheEntryProblem, (out: string, payload: string) => void];
  const cases: Tamper[] = [
    ['flipped payload byte', 'payload-sha256', (_o, p) => flip((b) => b.length - 5)(p)],
    ['flipped meta byte', 'meta-sha256', (o) => flip(() => OUTPUT_HEADER_SIZE + 2)(o)],
    ['truncated .out', 'truncated', (o) => writeFileSync(o, readFileSync(o).subarray(0, 100))],
    ['truncated payload', 'truncated', (_o, p) => writeFileSync(p, readFileSync(p).subarray(0, 5000))],
    [
      'byte appended to .out',
      'size-mismatch',
      (o) => writeFileSync(o, Buffer.concat([readFileSync(o), Buffer.of(0)])),
    ],
    [
      'byte appended to the payload',
      'size-mismatch',
      (_o, p) => writeFileSync(p, Buffer.concat([readFileSync(p), Buffer.of(0)])),
    ],
    ['edited sha512 in the header', 'hmac', (o) => flip(() => 0x60)(o)],
    [
      'a signed-entry file under an output name',
      'bad-magic',
      (o) => {
        const b = readFileSync(o);
        b.write('MARSCACH', 0, 'latin1');
        writeFileSync(o, b);
      },
    ],
    ['payload missing', 'payload-missing', (_o, p) => unlinkSync(p)],
    [
      'payload is a directory',
      'not-a-file',
      (_o, p) => {
        unlinkSync(p);
        mkdirSync(p);
      },
    ],
  ];
  for (const [what, problem, tamper] of cases) {
    const root = tempDir();
    const { store, problems } = logged(root);
    const key = keyOf(3);
    const payload = outputOf(3);
    await put(store, key, payload);
    tamper(store.outputPath(key), store.payloadPath(key));
    // hasOutput is a hint from two stats: it sees a missing payload or a short .out, nothing else.
    const visible = !['payload missing', 'payload is a directory', 'truncated .out'].includes(what);
    assert.equal(await store.hasOutput(key), visible, what);
    const r = await get(store, key);
    assert.equal(r.hit, undefined, what);
    assert.deepEqual(problems, [problem], what);
    assert.equal(existsSync(store.outputPath(key)), false, `${what}: .out removed`);
    // Whatever is at the payload's name goes too, a directory included (confined.ts removeEntry).
    assert.equal(existsSync(store.payloadPath(key)), false, `${what}: payload removed`);
    assert.deepEqual(dotFiles(root, key), [], `${what}: nothing left aside`);
    const s = await store.stats();
    assert.deepEqual(s.outputs, { hits: 0, misses: 1, corrupt: 1, puts: 1 }, what);
    assert.equal(s.corrupt, 1, `${what}: counted with the store's corrupt entries`);
    // Repaired by the next put.
    await put(store, key, payload);
    assert.ok((await get(store, key)).bytes.equals(payload), `${what}: repaired`);
  }
});

test('a missing .out is a plain miss; its orphan payload is removed by prune once stale', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const key = keyOf(20);
  const payload = outputOf(20, 9000);
  await put(store, key, payload);
  unlinkSync(store.outputPath(key));
  assert.equal(await store.hasOutput(key), false);
  assert.equal((await get(store, key)).hit, undefined);
  assert.deepEqual(problems, [], 'absent, not corrupt');
  assert.deepEqual((await store.stats()).outputs, { hits: 0, misses: 1, corrupt: 0, puts: 1 });
  const s = await store.stats();
  assert.equal(s.entries, 0, 'an orphan payload is no entry');
  assert.equal(s.bytes, 0);
  assert.deepEqual(await store.verify(), { checked: 0, ok: 0, bad: [], unsafe: [] });
  // A young orphan may be a put between its two renames: left alone.
  assert.equal((await store.prune(0)).staleTempRemoved, 0);
  assert.equal(existsSync(store.payloadPath(key)), true);
  const old = (Date.now() - STALE_TEMP_MS - 60_000) / 1000;
  utimesSync(store.payloadPath(key), old, old);
  const r = await store.prune(1 << 30);
  assert.deepEqual(r, { removed: 0, freedBytes: 0, remainingBytes: 0, staleTempRemoved: 1 });
  assert.equal(existsSync(store.payloadPath(key)), false);
});

test('an old-version single-file .out (payload inside) is a miss, removed, replaced by the next put', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const key = keyOf(21);
  const payload = outputOf(21, 7000);
  const meta = Buffer.from('{"v":1}');
  // Version 1: the same 224-byte header (HMAC'd with this secret), then meta, then the payload.
  const h = Buffer.alloc(OUTPUT_HEADER_SIZE);
  h.write('MARSLOUT', 0, 'latin1');
  h.writeUInt32BE(1, 0x08);
  h.writeUInt32BE(OUTPUT_HEADER_SIZE, 0x0c);
  h.writeBigUInt64BE(BigInt(payload.length), 0x10);
  h.writeUInt32BE(meta.length, 0x18);
  h.write(key, 0x20, 'hex');
  h.write(sha('sha256', payload), 0x40, 'hex');
  h.write(sha('sha512', payload), 0x60, 'hex');
  createHash('sha256').update(meta).digest().copy(h, 0xa0);
  createHmac('sha256', SECRET).update(h.subarray(0, 0xc0)).digest().copy(h, 0xc0);
  assert.notEqual(OUTPUT_FORMAT_VERSION, 1);
  mkdirSync(join(root, key.slice(0, 2)), { recursive: true });
  writeFileSync(store.outputPath(key), Buffer.concat([h, meta, payload]));
  assert.deepEqual((await store.verify()).bad, [{ key, kind: 'output', reason: 'version' }]);
  assert.equal((await get(store, key)).hit, undefined);
  assert.deepEqual(problems, ['version']);
  assert.equal(existsSync(store.outputPath(key)), false, 'removed');
  await put(store, key, payload);
  assert.ok((await get(store, key)).bytes.equals(payload), 'replaced');
});

test('putOutput with linkFrom: the payload is a hard link to the output file', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const dir = tempDir();
  const output = join(dir, 'de.mar');
  const key = keyOf(22);
  const payload = outputOf(22);
  writeFileSync(output, payload);
  assert.deepEqual(await put(store, key, payload, '{"v":1}', output), { linked: true });
  const [o, p] = [statSync(output), statSync(store.payloadPath(key))];
  assert.equal(p.ino, o.ino, 'same inode');
  assert.equal(p.dev, o.dev);
  assert.equal(o.nlink, 2, 'the output and the payload');
  assert.deepEqual(dotFiles(root, key), [], 'no temp link left');
  const s = await store.stats();
  assert.equal(s.bytes, OUTPUT_HEADER_SIZE + 7 + payload.length, 'the pair, payload counted once');

  // A hit does not touch the payload's times (it is the user's output file too).
  const mtime = statSync(output).mtimeMs;
  const old = (Date.now() - 3_600_000) / 1000;
  utimesSync(store.outputPath(key), old, old); // make the LRU touch due
  assert.ok((await get(store, key)).bytes.equals(payload));
  assert.ok(statSync(store.outputPath(key)).mtimeMs > old * 1000 + 1000, 'the .out was touched');
  assert.equal(statSync(output).mtimeMs, mtime, "the output's mtime is unchanged");

  // The output deleted: the link keeps the data.
  unlinkSync(output);
  assert.equal(statSync(store.payloadPath(key)).nlink, 1);
  const after = await get(store, key);
  assert.ok(after.hit && after.bytes.equals(payload), 'still served after the output was deleted');
  assert.deepEqual(problems, []);
});

test('the output edited in place (the linked file) is a miss, both files removed, repaired by the next put', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const dir = tempDir();
  const output = join(dir, 'fr.mar');
  const key = keyOf(23);
  const payload = outputOf(23);
  writeFileSync(output, payload);
  await put(store, key, payload, '{"v":1}', output);
  // Another program writes into the output file (same inode, same size).
  const fd = openSync(output, 'r+');
  writeSync(fd, Buffer.from('EDITED'), 0, 6, 1000);
  closeSync(fd);
  assert.ok(!readFileSync(store.payloadPath(key)).equals(payload), 'the payload changed with it');
  assert.equal((await get(store, key)).hit, undefined);
  assert.deepEqual(problems, ['payload-sha256']);
  assert.equal(existsSync(store.outputPath(key)), false);
  assert.equal(existsSync(store.payloadPath(key)), false);
  assert.equal(statSync(output).nlink, 1, "the user's (edited) output is left as it is");
  assert.equal(readFileSync(output).subarray(1000, 1006).toString(), 'EDITED');
  // The next run rewrites the output (temp + rename: a new inode) and stores it again.
  const fresh = join(dir, 'fr.mar.new');
  writeFileSync(fresh, payload);
  renameSync(fresh, output);
  assert.deepEqual(await put(store, key, payload, '{"v":1}', output), { linked: true });
  assert.ok((await get(store, key)).bytes.equals(payload), 'repaired');
  assert.deepEqual((await store.verify()).bad, []);
});

test('a link that cannot be made (another filesystem, missing file, wrong size) falls back to a copy', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const payload = outputOf(24, 50_000);
  const cases: [string, string | undefined][] = [];
  // /dev/shm is tmpfs on Linux CI and on this VM: link() across devices fails with EXDEV.
  if (existsSync('/dev/shm') && statSync('/dev/shm').dev !== statSync(root).dev) {
    const shm = mkdtempSync('/dev/shm/marsign-outlink-');
    writeFileSync(join(shm, 'out.mar'), payload);
    cases.push(['another filesystem (EXDEV)', join(shm, 'out.mar')]);
  } else cases.push(['another filesystem (EXDEV): no /dev/shm on another device, skipped', undefined]);
  const dir = tempDir();
  cases.push(['a missing file (ENOENT)', join(dir, 'missing.mar')]);
  writeFileSync(join(dir, 'short.mar'), payload.subarray(0, 1000));
  cases.push(['a file of another size', join(dir, 'short.mar')]);
  writeFileSync(join(dir, 'target.mar'), payload);
  symlinkSync(join(dir, 'target.mar'), join(dir, 'symlink.mar'));
  cases.push(['a symlink (link() links the symlink itself)', join(dir, 'symlink.mar')]);
  try {
    for (const [i, [what, from]] of cases.entries()) {
      if (from === undefined) continue;
      const key = keyOf(30 + i);
      assert.deepEqual(await put(store, key, payload, '{"v":1}', from), { linked: false }, what);
      const p = statSync(store.payloadPath(key));
      assert.equal(p.nlink, 1, `${what}: a copy`);
      assert.ok(readFileSync(store.payloadPath(key)).equals(payload), what);
      assert.deepEqual(dotFiles(root, key), [], `${what}: no temp left`);
      assert.ok((await get(store, key)).hit, what);
    }
  } finally {
    for (const [, from] of cases)
      if (from?.startsWith('/dev/shm/')) rmSync(join(from, '..'), { recursive: true, force: true });
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
  renameSync(mine.store.payloadPath(keyOf(5)), mine.store.payloadPath(keyOf(6)));
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
  // A pair whose payload lost a byte, and one whose payload is gone.
  await put(store, keyOf(15), good);
  writeFileSync(store.payloadPath(keyOf(15)), good.subarray(1));
  await put(store, keyOf(16), good);
  unlinkSync(store.payloadPath(keyOf(16)));
  const v = await store.verify();
  assert.equal(v.checked, 5);
  assert.equal(v.ok, 2);
  assert.deepEqual(
    [...v.bad].sort((a, b) => (a.key < b.key ? -1 : 1)),
    [
      { key: keyOf(8), kind: 'output', reason: 'payload-sha512' },
      { key: keyOf(15), kind: 'output', reason: 'truncated' },
      { key: keyOf(16), kind: 'output', reason: 'payload-missing' },
    ].sort((a, b) => (a.key < b.key ? -1 : 1)),
  );
  const r = await store.verify({ repair: true });
  assert.equal(r.bad.length, 3);
  for (const k of [keyOf(8), keyOf(15), keyOf(16)]) {
    assert.equal(existsSync(store.outputPath(k)), false);
    assert.equal(existsSync(store.payloadPath(k)), false, 'both files of the pair');
  }
  assert.ok(existsSync(store.payloadPath(keyOf(7))), 'the good pair stays');
  assert.deepEqual(await store.verify(), { checked: 2, ok: 2, bad: [], unsafe: [] });
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
  assert.equal(existsSync(store.payloadPath(keyOf(10))), false, 'both files of the pair');
  assert.equal(r.freedBytes, OUTPUT_HEADER_SIZE + 7 + 10_000, 'the size of the pair');
  const pair = statSync(store.outputPath(keyOf(12))).size + statSync(store.payloadPath(keyOf(12))).size;
  assert.equal((await store.stats()).bytes, pair + statSync(store.entryPath(keyOf(11))).size);
  const r2 = await store.prune(pair);
  assert.equal(r2.removed, 1);
  assert.equal(await store.has(keyOf(11)), false, 'then the older signed entry');
  assert.equal(await store.hasOutput(keyOf(12)), true);
  // The LRU clock is the .out's: an old payload mtime (a linked output written long ago) does not count.
  const old = t - 10_000;
  utimesSync(store.payloadPath(keyOf(12)), old, old);
  assert.equal((await store.prune(pair)).removed, 0);
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
  assert.equal(existsSync(store.payloadPath(keyOf(14))), false, 'the payload placed first was removed');
  assert.deepEqual(dotFiles(store.root, keyOf(14)), []);
  await assert.rejects(
    store.putOutput('../x', p, {
      sha256: sha('sha256', p),
      sha512: sha('sha512', p),
      meta: Buffer.from('{}'),
    }),
    { code: 'CACHE_BAD_KEY' },
  );
});
