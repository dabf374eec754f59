/**
 * The cache volume is writable by someone else (not root): they plant symlinks (prefix directories,
 * entry names, temp names, the secret file), FIFOs, sockets, devices, directories where files belong and
 * huge files. The store must never write (or remove) outside its root, never hang, never serve bad
 * bytes; verify reports each thing by type and path and repair removes it (the link, not its target).
 * Every fixture is made here, at test time. A hang is turned into a failure by a watchdog that opens the
 * planted FIFOs for writing (which releases a reader blocked in open) and fails the test.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chownSync,
  closeSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadOrCreateSecret, SECRET_FILE_NAME } from '../../cache/defaults.js';
import {
  FsCacheStore,
  HEADER_SIZE,
  MAX_PAYLOAD_BYTES,
  type CacheEntryProblem,
} from '../../cache/fs-store.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../helpers/env.js';

const SECRET = new Uint8Array(randomBytes(32));
/** A key whose prefix directory is `pp` (n tells keys in one directory apart). */
const keyIn = (pp: string, n = 0): string => pp + n.toString(16).padStart(62, '0');
const payloadOf = (n: number, size = 5000): Uint8Array => new Uint8Array(size).fill(n);
const sha = (alg: string, b: Uint8Array): string => createHash(alg).update(b).digest('hex');

function logged(root: string): { store: FsCacheStore; problems: CacheEntryProblem[] } {
  const problems: CacheEntryProblem[] = [];
  const store = new FsCacheStore({ root, hmacSecret: SECRET, onBadEntry: (_k, p) => void problems.push(p) });
  return { store, problems };
}

/** Every path below `dir` with its type, size and content digest: "unchanged" is this being equal. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const r = rel ? `${rel}/${name}` : name;
      if (st.isDirectory()) {
        out[r] = 'dir';
        walk(p, r);
      } else out[r] = st.isFile() ? `file ${st.size} ${sha('sha256', readFileSync(p))}` : `other ${st.mode}`;
    }
  };
  walk(dir, '');
  return out;
}

/** A directory standing in for the system configuration directory, with something in it. */
function outsideDir(): string {
  const dir = tempDir('marsign-outside-');
  writeFileSync(join(dir, 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
  return dir;
}

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  assert.equal(r.status, 0, `mkfifo ${path}: ${r.stderr}`);
}

async function listenSocket(path: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(path, ok));
  return server;
}

/**
 * `work` must settle within `ms`; if not, every FIFO in `fifos` is opened for writing and closed (a
 * reader blocked in open(2) then sees end of file and the process can finish) and the test fails.
 */
async function noHang<T>(what: string, fifos: string[], work: Promise<T>, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)));
  const r = await Promise.race([work, hung]);
  clearTimeout(timer);
  if (r === 'hung') {
    for (const f of fifos) {
      try {
        closeSync(openSync(f, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // no reader left
      }
    }
    await work.catch(() => undefined);
    assert.fail(`${what} hung on a FIFO for ${ms} ms`);
  }
  return r as T;
}

test('a prefix directory replaced by a symlink: nothing is read, written or removed through it; a put replaces the link', async () => {
  const root = tempDir();
  const outside = outsideDir();
  const { store, problems } = logged(root);
  const key = keyIn('4f', 1);
  await store.put(key, payloadOf(1));
  // The attacker moves the real directory (a valid entry in it) out and links its name to it: a read
  // through the link would serve bytes from outside; a write would land there.
  renameSync(join(root, '4f'), join(outside, '4f'));
  symlinkSync(join(outside, '4f'), join(root, '4f'));
  // And a second prefix linked straight at the "system configuration directory".
  symlinkSync(outside, join(root, '5a'));
  const before = snapshot(outside);

  assert.equal(await store.get(key), undefined, 'never served from behind the link');
  assert.deepEqual(problems, ['outside-root']);
  assert.equal(await store.readInto(key, new Uint8Array(5000)), undefined);
  assert.equal((await store.stats()).corrupt, 2);
  assert.deepEqual(snapshot(outside), before, 'nothing renamed aside or removed outside the root');

  const real = realpathSync(root);
  const v = await store.verify();
  assert.deepEqual(v.bad, []);
  assert.deepEqual(
    [...v.unsafe].sort((a, b) => (a.path < b.path ? -1 : 1)),
    [
      { path: join(real, '4f'), type: 'symlink' },
      { path: join(real, '5a'), type: 'symlink' },
    ],
  );

  // Puts under both prefixes land inside the root: each link is replaced by a real directory.
  await store.put(key, payloadOf(1));
  await store.put(keyIn('5a', 2), payloadOf(2));
  await store.putSignature(keyIn('5a', 3), payloadOf(3, 300));
  assert.ok(lstatSync(join(root, '4f')).isDirectory() && !lstatSync(join(root, '4f')).isSymbolicLink());
  assert.ok(lstatSync(join(root, '5a')).isDirectory());
  assert.deepEqual((await store.get(key))?.payload, payloadOf(1));
  assert.deepEqual((await store.get(keyIn('5a', 2)))?.payload, payloadOf(2));
  assert.deepEqual(snapshot(outside), before, 'nothing written outside the root');
  assert.deepEqual(await store.verify(), { checked: 3, ok: 3, bad: [], unsafe: [] });

  // repair removes a planted link itself, never what it points to.
  symlinkSync(outside, join(root, 'c3'));
  const r = await store.verify({ repair: true });
  assert.deepEqual(r.unsafe, [{ path: join(real, 'c3'), type: 'symlink', removed: true }]);
  assert.equal(existsSync(join(root, 'c3')), false);
  assert.deepEqual(snapshot(outside), before);
});

test('entry, signature, .out and .mar names that are symlinks are counted misses; the link goes, never its target', async () => {
  const root = tempDir();
  const outside = outsideDir();
  const { store, problems } = logged(root);
  // Valid files to point at: the links would serve them if followed.
  const donor = new FsCacheStore({ root: join(outside, 'donor'), hmacSecret: SECRET });
  const key = keyIn('a1', 1);
  const out = Buffer.from(payloadOf(7, 70_000));
  const info = { sha256: sha('sha256', out), sha512: sha('sha512', out), meta: Buffer.from('{}') };
  await donor.put(key, payloadOf(1));
  await donor.putSignature(key, payloadOf(2, 200));
  await donor.putOutput(key, out, info);
  mkdirSync(join(root, 'a1'));
  symlinkSync(donor.entryPath(key), store.entryPath(key));
  symlinkSync(donor.signaturePath(key), store.signaturePath(key));
  const before = snapshot(outside);

  assert.equal(await store.get(key), undefined);
  assert.equal(await store.getSignature(key), undefined);
  assert.deepEqual(problems, ['symlink', 'symlink']);
  assert.equal(existsSync(store.entryPath(key)) || lstatExists(store.entryPath(key)), false, 'link removed');
  assert.equal(lstatExists(store.signaturePath(key)), false);

  // The output tier: first the .out is a link, then (with a real .out) the payload is.
  symlinkSync(donor.outputPath(key), store.outputPath(key));
  symlinkSync(donor.payloadPath(key), store.payloadPath(key));
  const sink = async (): Promise<void> => undefined;
  assert.equal(await store.getOutput(key, sink), undefined);
  assert.equal(lstatExists(store.outputPath(key)), false);
  assert.equal(lstatExists(store.payloadPath(key)), false, 'the payload link goes with the bad .out');
  await store.putOutput(key, out, info);
  unlinkSync(store.payloadPath(key));
  symlinkSync(donor.payloadPath(key), store.payloadPath(key));
  assert.equal(await store.getOutput(key, sink), undefined);
  assert.deepEqual(problems, ['symlink', 'symlink', 'symlink', 'symlink']);
  assert.equal(lstatExists(store.payloadPath(key)), false);
  assert.equal(lstatExists(store.outputPath(key)), false);
  assert.deepEqual((await store.stats()).outputs, { hits: 0, misses: 2, corrupt: 2, puts: 1 });
  assert.deepEqual(snapshot(outside), before, 'the targets are untouched');

  // Replaced by the next puts.
  await store.put(key, payloadOf(1));
  await store.putOutput(key, out, info);
  assert.deepEqual((await store.get(key))?.payload, payloadOf(1));
  assert.ok(await store.getOutput(key, sink));
});

function lstatExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

test('temp-named symlinks are reported and removed by repair, never followed by prune; a symlinked root is resolved once', async () => {
  const top = tempDir();
  const outside = outsideDir();
  const realRoot = join(top, 'real');
  mkdirSync(realRoot);
  const root = join(top, 'link');
  symlinkSync(realRoot, root);
  const { store } = logged(root);
  const key = keyIn('b2', 1);
  await store.put(key, payloadOf(1));
  assert.ok(existsSync(join(realRoot, 'b2', key)), 'a configured root that is a symlink is followed');
  assert.equal((await store.stats()).root, root);
  // Temp and quarantine names as links to a file outside, aged past STALE_TEMP_MS: prune and repair
  // must not delete or truncate the target.
  const t1 = join(realRoot, 'b2', `.${key}.4242.a1b2c3d4e5f6.tmp`);
  const t2 = join(realRoot, 'b2', `.${key}.4243.a1b2c3d4e5f7.bad`);
  symlinkSync(join(outside, 'passwd'), t1);
  symlinkSync(join(outside, 'passwd'), t2);
  spawnSync('touch', ['-h', '-d', '2 days ago', t1, t2]);
  const before = snapshot(outside);
  const p = await store.prune(1 << 30);
  assert.equal(p.staleTempRemoved, 0, 'links are not temps');
  assert.deepEqual(snapshot(outside), before);
  const v = await store.verify({ repair: true });
  assert.deepEqual(
    v.unsafe.map((u) => [u.path, u.type, u.removed]),
    [
      [join(realRoot, 'b2', `.${key}.4242.a1b2c3d4e5f6.tmp`), 'symlink', true],
      [join(realRoot, 'b2', `.${key}.4243.a1b2c3d4e5f7.bad`), 'symlink', true],
    ],
  );
  assert.equal(lstatExists(t1) || lstatExists(t2), false);
  assert.deepEqual(snapshot(outside), before);
  assert.deepEqual((await store.get(key))?.payload, payloadOf(1));
});

test('the generated secret file: a symlink or FIFO is refused (never followed, never waited on); one owned by another user too', async () => {
  const outside = outsideDir();
  // A valid secret outside, mode 0600: following the link would accept it.
  writeFileSync(join(outside, 'known-secret'), 'ab'.repeat(32) + '\n', { mode: 0o600 });
  const linked = tempDir();
  symlinkSync(join(outside, 'known-secret'), join(linked, SECRET_FILE_NAME));
  await assert.rejects(loadOrCreateSecret(linked), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.code, 'CACHE_SECRET_UNREADABLE');
    assert.match(e.message, /symbolic link/);
    return true;
  });
  const fifo = tempDir();
  mkfifo(join(fifo, SECRET_FILE_NAME));
  await noHang(
    'reading a FIFO secret',
    [join(fifo, SECRET_FILE_NAME)],
    assert.rejects(loadOrCreateSecret(fifo), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.code, 'CACHE_SECRET_UNREADABLE');
      assert.match(e.message, /not a regular file \(fifo\)/);
      return true;
    }),
  );
  // Someone else's secret (they would know it): refused. Needs chown, i.e. root.
  if (process.getuid?.() === 0) {
    const planted = tempDir();
    writeFileSync(join(planted, SECRET_FILE_NAME), 'cd'.repeat(32) + '\n', { mode: 0o600 });
    chownSync(join(planted, SECRET_FILE_NAME), 4242, 4242);
    await assert.rejects(loadOrCreateSecret(planted), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.code, 'CACHE_SECRET_PERMISSIONS');
      assert.match(e.message, /owned by uid 4242/);
      return true;
    });
  }
  const fresh = tempDir();
  const s = await loadOrCreateSecret(fresh);
  assert.equal(s.length, 32);
  assert.ok(lstatSync(join(fresh, SECRET_FILE_NAME)).isFile());
});

test('a FIFO at an entry, signature, .out or .mar is a counted miss at once, removed, replaced by the next put', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const key = keyIn('c4', 1);
  mkdirSync(join(root, 'c4'));
  const fifos = [store.entryPath(key), store.signaturePath(key), store.outputPath(key)];
  for (const f of fifos) mkfifo(f);
  const sink = async (): Promise<void> => undefined;
  assert.equal(await noHang('get', fifos, store.get(key)), undefined);
  assert.equal(await noHang('readInto', fifos, store.readInto(key, new Uint8Array(10))), undefined);
  assert.equal(await noHang('getSignature', fifos, store.getSignature(key)), undefined);
  assert.equal(await noHang('getOutput', fifos, store.getOutput(key, sink)), undefined);
  // readInto met the FIFO get had already removed: a plain miss there.
  assert.deepEqual(problems, ['not-a-file', 'not-a-file', 'not-a-file']);
  for (const f of fifos) assert.equal(lstatExists(f), false, `${f} removed`);

  // A payload FIFO behind a sound .out.
  const out = Buffer.from(payloadOf(9, 20_000));
  const info = { sha256: sha('sha256', out), sha512: sha('sha512', out), meta: Buffer.from('{}') };
  await store.putOutput(key, out, info);
  unlinkSync(store.payloadPath(key));
  mkfifo(store.payloadPath(key));
  assert.equal(await noHang('getOutput', [store.payloadPath(key)], store.getOutput(key, sink)), undefined);
  assert.equal(problems.at(-1), 'not-a-file');
  assert.equal(lstatExists(store.payloadPath(key)) || lstatExists(store.outputPath(key)), false);
  const s = await store.stats();
  assert.equal(s.corrupt, 4);
  assert.deepEqual(s.outputs, { hits: 0, misses: 2, corrupt: 2, puts: 1 });
  assert.deepEqual(readdirSync(join(root, 'c4')), [], 'no .tmp or .bad left');

  await store.put(key, payloadOf(1));
  await store.putSignature(key, payloadOf(2, 100));
  await store.putOutput(key, out, info);
  assert.deepEqual((await store.get(key))?.payload, payloadOf(1));
  assert.deepEqual(await store.getSignature(key), payloadOf(2, 100));
  assert.ok(await store.getOutput(key, sink));
});

test('a socket or a device node at an entry is a counted miss; a huge sparse file is refused by its size', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const sockKey = keyIn('d5', 1);
  mkdirSync(join(root, 'd5'));
  const server = await listenSocket(store.entryPath(sockKey));
  try {
    assert.equal(await store.get(sockKey), undefined);
    assert.deepEqual(problems, ['not-a-file']);
    assert.equal(lstatExists(store.entryPath(sockKey)), false, 'removed');
  } finally {
    server.close();
  }
  // A character device (root can mknod in most containers; skipped where it cannot).
  const devKey = keyIn('d5', 2);
  if (spawnSync('mknod', [store.entryPath(devKey), 'c', '1', '3']).status === 0) {
    assert.equal(await store.get(devKey), undefined);
    assert.equal(problems.at(-1), 'not-a-file');
    assert.equal(lstatExists(store.entryPath(devKey)), false);
  }
  // 1 GiB + a header + 1 byte of nothing: refused before a byte is read.
  const bigKey = keyIn('d5', 3);
  writeFileSync(store.entryPath(bigKey), '');
  truncateSync(store.entryPath(bigKey), HEADER_SIZE + MAX_PAYLOAD_BYTES + 1);
  assert.equal(await store.get(bigKey), undefined);
  assert.equal(problems.at(-1), 'too-large');
  assert.equal(lstatExists(store.entryPath(bigKey)), false);
});

test('verify reports every non-file by type and path without hanging; repair removes each as what it is', async () => {
  const root = tempDir();
  const outside = outsideDir();
  const store = new FsCacheStore({ root, hmacSecret: SECRET });
  const good = keyIn('e6', 1);
  await store.put(good, payloadOf(1));
  const dir = join(root, 'e6');
  mkfifo(join(dir, keyIn('e6', 2)));
  mkfifo(join(dir, `.${keyIn('e6', 3)}.77.a1b2c3d4e5f6.tmp`));
  mkfifo(join(root, 'stray-fifo'));
  symlinkSync(outside, join(root, 'convenience-link'));
  writeFileSync(join(root, 'f7'), 'a file where a prefix directory belongs');
  // A directory tree where an entry belongs, with a link out of the cache inside it.
  mkdirSync(join(dir, keyIn('e6', 4), 'deeper'), { recursive: true });
  symlinkSync(outside, join(dir, keyIn('e6', 4), 'deeper', 'out'));
  writeFileSync(join(dir, keyIn('e6', 4), 'deeper', 'x'), 'x');
  const server = await listenSocket(join(dir, keyIn('e6', 5)));
  const before = snapshot(outside);
  const fifos = [join(dir, keyIn('e6', 2)), join(dir, `.${keyIn('e6', 3)}.77.a1b2c3d4e5f6.tmp`)];
  try {
    const real = realpathSync(root);
    const expected = [
      [join(real, 'convenience-link'), 'symlink'],
      [join(real, 'e6', `.${keyIn('e6', 3)}.77.a1b2c3d4e5f6.tmp`), 'fifo'],
      [join(real, 'e6', keyIn('e6', 2)), 'fifo'],
      [join(real, 'e6', keyIn('e6', 4)), 'directory'],
      [join(real, 'e6', keyIn('e6', 5)), 'socket'],
      [join(real, 'f7'), 'file'],
      [join(real, 'stray-fifo'), 'fifo'],
    ];
    const sorted = (u: { path: string; type: string; removed?: boolean }[]) =>
      u.map((x) => [x.path, x.type, ...(x.removed === undefined ? [] : [x.removed])]).sort();
    const v = await noHang('verify', fifos, store.verify());
    assert.deepEqual(sorted(v.unsafe), expected);
    assert.deepEqual([v.checked, v.ok, v.bad], [1, 1, []]);
    const r = await noHang('verify --repair', fifos, store.verify({ repair: true }));
    assert.deepEqual(
      sorted(r.unsafe),
      expected.map((e) => [...e, true]),
    );
    for (const [p] of expected) assert.equal(lstatExists(p!), false, `${p} removed`);
    assert.deepEqual(snapshot(outside), before, 'nothing outside removed through the planted links');
    assert.deepEqual(await store.verify(), { checked: 1, ok: 1, bad: [], unsafe: [] });
    assert.deepEqual((await store.get(good))?.payload, payloadOf(1));
  } finally {
    server.close();
    rmSync(join(root, 'e6'), { recursive: true, force: true });
  }
});

test('blobs (remote transfer) are read and received like every cache file: no link followed, no FIFO blocked on', async () => {
  const root = join(tempDir(), 'cache');
  const outside = tempDir('marsign-outside-');
  const store = new FsCacheStore({ root, hmacSecret: randomBytes(32) });
  const bytes = randomBytes(5000);
  const sha = createHash('sha256').update(bytes).digest('hex');
  const prefix = join(root, sha.slice(0, 2));
  mkdirSync(prefix, { recursive: true });
  // A blob name that is a link to a file outside holding exactly the right bytes: not served, not removed.
  writeFileSync(join(outside, 'bait'), bytes);
  symlinkSync(join(outside, 'bait'), join(prefix, `${sha}.blob`));
  assert.equal(await store.getBlob(sha), undefined);
  assert.equal(await store.blobSize(sha), undefined);
  assert.ok(readFileSync(join(outside, 'bait')).equals(bytes), 'the link target is untouched');
  assert.equal(existsSync(join(prefix, `${sha}.blob`)), false, 'the link itself was removed as a bad entry');
  // A FIFO as the blob and as the upload file: a miss at once, and an upload that writes nothing through it.
  spawnSync('mkfifo', [join(prefix, `${sha}.blob`)]);
  assert.equal(await store.getBlob(sha), undefined);
  rmSync(join(prefix, `${sha}.blob`), { force: true });
  symlinkSync(join(outside, 'upload-target'), join(prefix, `.${sha}.blob.upload.tmp`));
  await assert.rejects(store.receiveBlob(sha, { size: bytes.length, offset: 0, body: [bytes] }), (e: Error) =>
    /ELOOP|symbolic link/.test(String((e as NodeJS.ErrnoException).code ?? e.message)),
  );
  assert.equal(existsSync(join(outside, 'upload-target')), false, 'nothing written through the link');
  rmSync(join(prefix, `.${sha}.blob.upload.tmp`));
  const r = await store.receiveBlob(sha, { size: bytes.length, offset: 0, body: [bytes] });
  assert.deepEqual(r, { complete: true, offset: bytes.length, created: true });
  assert.ok(Buffer.from((await store.getBlob(sha))!).equals(bytes));
});

test('passthrough check markers: a planted link, FIFO or forged file is never a pass, never followed or waited on', async () => {
  const root = tempDir();
  const { store, problems } = logged(root);
  const good = keyIn('c1', 1);
  await store.putCheck(good);
  assert.equal(await store.hasCheck(good), true);
  assert.equal((await store.stats()).byKind?.check.entries, 1);

  // A valid marker moved outside and linked in under its own name: not followed, the link removed.
  const outside = join(tempDir(), 'marker.chk');
  renameSync(store.checkPath(good), outside);
  symlinkSync(outside, store.checkPath(good));
  assert.equal(await store.hasCheck(good), false);
  assert.ok(!existsSync(store.checkPath(good)) && existsSync(outside), 'the link goes, its target stays');

  // A FIFO where a marker belongs: refused at once.
  const fifoKey = keyIn('c1', 2);
  mkdirSync(join(root, 'c1'), { recursive: true });
  mkfifo(store.checkPath(fifoKey));
  assert.equal(await noHang('hasCheck', [store.checkPath(fifoKey)], store.hasCheck(fifoKey)), false);

  // A forged marker (the layout without the secret's HMAC), and a valid one moved to another key.
  const forged = keyIn('c1', 3);
  writeFileSync(store.checkPath(forged), randomBytes(HEADER_SIZE));
  assert.equal(await store.hasCheck(forged), false);
  const moved = keyIn('c1', 4);
  await store.putCheck(good);
  renameSync(store.checkPath(good), store.checkPath(moved));
  assert.equal(await store.hasCheck(moved), false, 'the HMAC binds a marker to its key');
  assert.ok(problems.length >= 3, `bad markers are reported: ${problems.join(', ')}`);

  // verify names a bad marker's kind.
  await store.putCheck(good);
  const f = store.checkPath(good);
  const bytes = readFileSync(f);
  bytes[0x40] = bytes[0x40]! ^ 1;
  writeFileSync(f, bytes);
  const report = await store.verify();
  assert.deepEqual(
    report.bad.map((b) => b.kind),
    ['check'],
  );
});
