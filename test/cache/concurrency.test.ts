import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsCacheStore } from '../../cache/fs-store.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';
import { keyFor, payloadFor, SHARED_KEYS } from './stress-child.js';

interface ChildResult {
  wrong: number;
  hits: number;
  misses: number;
  corrupt: number;
  puts: number;
  ops: number;
}

function runChild(
  root: string,
  secretHex: string,
  id: string,
  iterations: number,
  mode: string,
): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(PROJECT_ROOT, 'test/cache/stress-child.ts'),
        root,
        secretHex,
        id,
        String(iterations),
        mode,
      ],
      { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`child ${id} exited ${code}: ${err}`));
      else resolve(JSON.parse(out) as ChildResult);
    });
  });
}

function dotFiles(root: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(root)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const n of readdirSync(join(root, d)))
      if (n.startsWith('.') || n.includes('tamper')) out.push(join(d, n));
  }
  return out;
}

test('4 processes putting and getting the same and different keys on one directory', async () => {
  const root = tempDir();
  const secret = randomBytes(32);
  const results = await Promise.all(
    ['a', 'b', 'c', 'd'].map((id) => runChild(root, secret.toString('hex'), id, 250, 'rw')),
  );
  for (const r of results) {
    assert.equal(r.wrong, 0, 'no reader ever got wrong bytes');
    assert.equal(r.corrupt, 0, 'concurrent writers never produce a bad entry');
    assert.ok(r.hits > 0 && r.puts > 0);
  }
  const store = new FsCacheStore({ root, hmacSecret: secret });
  const report = await store.verify();
  assert.deepEqual(report.bad, []);
  // Every key written is present exactly once (shared keys by all four writers, own keys by one).
  assert.ok(report.checked <= SHARED_KEYS + 4 * 4 && report.checked >= SHARED_KEYS);
  assert.equal(report.ok, report.checked);
  for (let i = 0; i < SHARED_KEYS; i++) {
    const key = keyFor(`shared-${i}`);
    assert.deepEqual((await store.get(key))?.payload, payloadFor(key));
  }
  assert.deepEqual(dotFiles(root), [], 'no temp or quarantine file left behind');
});

test('readers racing a tamperer never get wrong bytes; the cache heals', async () => {
  const root = tempDir();
  const secret = randomBytes(32);
  const hex = secret.toString('hex');
  // Seed every shared key so the tamperer has something to damage from the start.
  const seed = new FsCacheStore({ root, hmacSecret: secret });
  for (let i = 0; i < SHARED_KEYS; i++)
    await seed.put(keyFor(`shared-${i}`), payloadFor(keyFor(`shared-${i}`)));
  const results = await Promise.all([
    runChild(root, hex, 'a', 250, 'rw'),
    runChild(root, hex, 'b', 250, 'rw'),
    runChild(root, hex, 'c', 250, 'rw'),
    runChild(root, hex, 't', 400, 'tamper'),
  ]);
  const readers = results.slice(0, 3);
  for (const r of readers) assert.equal(r.wrong, 0, 'no reader ever got wrong bytes');
  assert.ok(
    readers.reduce((n, r) => n + r.corrupt, 0) > 0,
    'the tamperer damaged entries that readers then saw as corrupt',
  );
  const store = new FsCacheStore({ root, hmacSecret: secret });
  await store.verify({ repair: true });
  for (const f of dotFiles(root)) assert.match(f, /tamper-/, `unexpected leftover ${f}`);
  const after = await store.verify();
  assert.deepEqual(after.bad, []);
  for (let i = 0; i < SHARED_KEYS; i++) {
    const key = keyFor(`shared-${i}`);
    if ((await store.get(key)) === undefined) await store.put(key, payloadFor(key));
    assert.deepEqual((await store.get(key))?.payload, payloadFor(key));
  }
});

test('a writer killed mid-put leaves no entry, only a temp file that is never served', async () => {
  const root = tempDir();
  const secret = randomBytes(32);
  const key = keyFor('crash');
  const script = `
    import { AtomicFile } from ${JSON.stringify(join(PROJECT_ROOT, 'src/io/atomic.ts'))};
    import { mkdirSync } from 'node:fs';
    const [root, key] = process.argv.slice(1);
    mkdirSync(root + '/' + key.slice(0, 2), { recursive: true });
    const f = await AtomicFile.create(root + '/' + key.slice(0, 2) + '/' + key);
    await f.write(new Uint8Array(5000).fill(7));
    process.kill(process.pid, 'SIGKILL');
  `;
  const code = await new Promise<number | null>((resolve) => {
    const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, root, key], {
      cwd: PROJECT_ROOT,
      stdio: 'ignore',
    });
    c.on('close', (code, signal) => resolve(signal === 'SIGKILL' ? null : code));
  });
  assert.equal(code, null, 'the writer died by SIGKILL');
  assert.equal(dotFiles(root).length, 1);
  const store = new FsCacheStore({ root, hmacSecret: secret });
  assert.equal(await store.get(key), undefined);
  assert.equal((await store.stats()).entries, 0);
  assert.deepEqual(await store.verify(), { checked: 0, ok: 0, bad: [], unsafe: [] });
  await store.put(key, payloadFor(key));
  assert.deepEqual((await store.get(key))?.payload, payloadFor(key));
});
