import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadOrCreateSecret } from '../../cache/defaults.js';
import { FsCacheStore, HEADER_SIZE, OUTPUT_HEADER_SIZE } from '../../cache/fs-store.js';
import { runCli, tempDir } from '../helpers/env.js';

const key = (n: number) => n.toString(16).padStart(2, '0').repeat(32);

async function populated(): Promise<{ dir: string; store: FsCacheStore }> {
  const dir = tempDir();
  const store = new FsCacheStore({ root: dir, hmacSecret: await loadOrCreateSecret(dir) });
  const t0 = Date.now() / 1000 - 7200;
  for (let n = 1; n <= 4; n++) {
    await store.put(key(n), new Uint8Array(1000).fill(n));
    utimesSync(store.entryPath(key(n)), t0 + n * 60, t0 + n * 60); // key(1) least recently used
  }
  return { dir, store };
}

test('cache --help lists the subcommands; missing or bad arguments are usage errors', async () => {
  const [help, none, noSize, bad] = await Promise.all([
    runCli(['cache', '--help']),
    runCli(['cache']),
    runCli(['cache', 'prune', '--cache-dir', tempDir()]),
    runCli(['cache', 'prune', '--max-size', '12 parsecs', '--cache-dir', tempDir()]),
  ]);
  assert.equal(help.code, 0);
  for (const c of ['stats', 'verify', 'prune']) assert.match(help.stdout, new RegExp(`marsign cache ${c}`));
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^marsign: USAGE:/);
  assert.equal(noSize.code, 2);
  assert.match(noSize.stderr, /max-size/);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^marsign: BAD_SIZE: .*"12 parsecs"/);
});

test('stats, verify and prune on a cache that does not exist: CACHE_NOT_FOUND (exit 2), nothing created', async () => {
  const dir = join(tempDir(), 'nothing-here');
  for (const args of [['stats'], ['stats', '--json'], ['verify'], ['prune', '--max-size', '1G']]) {
    const r = await runCli(['cache', ...args, '--cache-dir', dir]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(
      r.stderr,
      `marsign: CACHE_NOT_FOUND: no cache at ${dir} (from --cache-dir): no such directory\n`,
      args.join(' '),
    );
    assert.doesNotMatch(r.stdout, /entries/, 'no count reported for a cache nobody looked at');
  }
  const viaEnv = await runCli(['cache', 'stats'], { env: { MARSIGN_CACHE_DIR: dir, MARSIGN_CONFIG: '' } });
  assert.equal(viaEnv.code, 2);
  assert.match(viaEnv.stderr, /^marsign: CACHE_NOT_FOUND: no cache at .* \(from \$MARSIGN_CACHE_DIR\)/);
  assert.equal(existsSync(dir), false);
});

test('stats counts entries and bytes by kind; $MARSIGN_CACHE_DIR is the default root', async () => {
  const { dir, store } = await populated();
  await store.putSignature(key(9), new Uint8Array(300));
  await store.putCheck(key(8));
  const [json, human] = await Promise.all([
    runCli(['cache', 'stats', '--json'], { env: { MARSIGN_CACHE_DIR: dir } }),
    runCli(['cache', 'stats', '--cache-dir', dir]),
  ]);
  assert.equal(json.code, 0, json.stderr);
  const bytes = 4 * (HEADER_SIZE + 1000);
  assert.deepEqual(JSON.parse(json.stdout), {
    root: dir,
    entries: 6,
    bytes: bytes + HEADER_SIZE + 300 + HEADER_SIZE,
    signedEntries: { entries: 4, bytes },
    peSignatures: { entries: 1, bytes: HEADER_SIZE + 300 },
    localeOutputs: { entries: 0, bytes: 0 },
    blobs: { entries: 0, bytes: 0 },
    passthroughChecks: { entries: 1, bytes: HEADER_SIZE },
  });
  assert.equal(human.code, 0);
  assert.match(human.stdout, /entries\s+6\n/);
  assert.match(human.stdout, /PE signatures\s+1 /);
  assert.match(human.stdout, /passthrough checks\s+1 /);
  assert.match(human.stdout, new RegExp(`\\(${bytes + 2 * HEADER_SIZE + 300} bytes\\)`));
});

test('verify exits 1 on bad entries, 0 after --repair removed them', async () => {
  const { dir, store } = await populated();
  const ok = await runCli(['cache', 'verify', '--cache-dir', dir]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /checked 4 entries .*: 4 ok, 0 bad/);

  const path = store.entryPath(key(2));
  const b = readFileSync(path);
  b[b.length - 1]! ^= 0xff;
  writeFileSync(path, b);
  const [human, json] = await Promise.all([
    runCli(['cache', 'verify', '--cache-dir', dir]),
    runCli(['cache', 'verify', '--json', '--cache-dir', dir]),
  ]);
  assert.equal(human.code, 1);
  assert.match(human.stdout, new RegExp(`bad ${key(2)} payload-sha256\\n`));
  assert.equal(json.code, 1);
  const doc = JSON.parse(json.stdout) as { checked: number; ok: number; bad: unknown[]; repaired: boolean };
  assert.equal(doc.checked, 4);
  assert.equal(doc.ok, 3);
  assert.equal(doc.repaired, false);
  assert.deepEqual(doc.bad, [{ key: key(2), reason: 'payload-sha256' }]);
  assert.ok(existsSync(path), 'verify without --repair changes nothing');

  const repair = await runCli(['cache', 'verify', '--repair', '--cache-dir', dir]);
  assert.equal(repair.code, 0, repair.stderr);
  assert.match(repair.stdout, new RegExp(`bad ${key(2)} payload-sha256 \\(removed\\)`));
  assert.equal(existsSync(path), false);
  const again = await runCli(['cache', 'verify', '--json', '--cache-dir', dir]);
  assert.equal(again.code, 0);
  assert.equal((JSON.parse(again.stdout) as { ok: number }).ok, 3);
});

test('prune --max-size removes least recently used entries first', async () => {
  const { dir, store } = await populated();
  const entry = HEADER_SIZE + 1000;
  const r = await runCli(['cache', 'prune', '--max-size', '2.5K', '--json', '--cache-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    root: dir,
    maxBytes: 2560,
    removed: 2,
    freedBytes: 2 * entry,
    remainingBytes: 2 * entry,
    staleTempRemoved: 0,
  });
  assert.deepEqual(
    [1, 2, 3, 4].map((n) => existsSync(store.entryPath(key(n)))),
    [false, false, true, true],
  );
  const human = await runCli(['cache', 'prune', '--max-size', '0', '--cache-dir', dir]);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /^removed 2 entries/);
  assert.equal((await store.stats()).entries, 0);
});

test('--config supplies cache.dir (relative to the config) and the HMAC secret file', async () => {
  const base = tempDir();
  const secretHex = 'c3'.repeat(32);
  writeFileSync(join(base, 'cache.secret'), secretHex + '\n', { mode: 0o600 });
  const cfg = join(base, 'marsign.config.json');
  writeFileSync(cfg, JSON.stringify({ cache: { dir: 'c', hmacSecretFile: 'cache.secret' }, profiles: {} }));
  const dir = join(base, 'c');
  const store = new FsCacheStore({ root: dir, hmacSecret: Buffer.from(secretHex, 'hex') });
  await store.put(key(9), new Uint8Array(10).fill(9));

  const [stats, verify, fromEnv] = await Promise.all([
    runCli(['cache', 'stats', '--json', '--config', cfg]),
    runCli(['cache', 'verify', '--json', '--config', cfg]),
    runCli(['cache', 'verify', '--json'], { env: { MARSIGN_CONFIG: cfg } }),
  ]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal((JSON.parse(stats.stdout) as { root: string; entries: number }).root, dir);
  assert.equal((JSON.parse(stats.stdout) as { entries: number }).entries, 1);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal((JSON.parse(verify.stdout) as { ok: number }).ok, 1);
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.equal((JSON.parse(fromEnv.stdout) as { ok: number }).ok, 1);
  assert.equal(existsSync(join(dir, '.hmac-secret')), false, 'a configured secret is used, none generated');

  // Without the config the same entries cannot be authenticated (a new secret is generated there).
  const other = await runCli(['cache', 'verify', '--json', '--cache-dir', dir]);
  assert.equal(other.code, 1);
  assert.deepEqual((JSON.parse(other.stdout) as { bad: unknown[] }).bad, [{ key: key(9), reason: 'hmac' }]);

  const missing = await runCli(['cache', 'stats', '--config', join(base, 'nope.json')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^marsign: CONFIG_NOT_FOUND:/);
});

test('stats, verify and prune treat a locale output (.out + linked .mar) as one entry', async () => {
  const dir = tempDir();
  const store = new FsCacheStore({ root: dir, hmacSecret: await loadOrCreateSecret(dir) });
  const outDir = tempDir();
  const payload = Buffer.alloc(5000, 7);
  const sha = (alg: string) => createHash(alg).update(payload).digest('hex');
  const meta = Buffer.from('{"v":1,"entries":[]}');
  for (const n of [1, 2]) {
    writeFileSync(join(outDir, `${n}.mar`), payload);
    const r = await store.putOutput(
      key(n),
      payload,
      { sha256: sha('sha256'), sha512: sha('sha512'), meta },
      { linkFrom: join(outDir, `${n}.mar`) },
    );
    assert.deepEqual(r, { linked: true });
  }
  const pair = OUTPUT_HEADER_SIZE + meta.length + payload.length;
  const stats = await runCli(['cache', 'stats', '--json', '--cache-dir', dir]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.deepEqual(JSON.parse(stats.stdout), {
    root: dir,
    entries: 2,
    bytes: 2 * pair,
    signedEntries: { entries: 0, bytes: 0 },
    peSignatures: { entries: 0, bytes: 0 },
    localeOutputs: { entries: 2, bytes: 2 * pair },
    blobs: { entries: 0, bytes: 0 },
    passthroughChecks: { entries: 0, bytes: 0 },
  });

  // key(2)'s payload lost: verify names it; --repair removes its .out; the user's output is untouched.
  unlinkSync(store.payloadPath(key(2)));
  const bad = await runCli(['cache', 'verify', '--json', '--cache-dir', dir]);
  assert.equal(bad.code, 1);
  assert.deepEqual((JSON.parse(bad.stdout) as { bad: unknown[] }).bad, [
    { key: key(2), kind: 'output', reason: 'payload-missing' },
  ]);
  const repair = await runCli(['cache', 'verify', '--repair', '--json', '--cache-dir', dir]);
  assert.equal(repair.code, 0, repair.stderr);
  assert.equal(existsSync(store.outputPath(key(2))), false);
  assert.ok(readFileSync(join(outDir, '2.mar')).equals(payload));

  const pruned = await runCli(['cache', 'prune', '--max-size', '0', '--json', '--cache-dir', dir]);
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.deepEqual(JSON.parse(pruned.stdout), {
    root: dir,
    maxBytes: 0,
    removed: 1,
    freedBytes: pair,
    remainingBytes: 0,
    staleTempRemoved: 0,
  });
  assert.equal(existsSync(store.outputPath(key(1))), false);
  assert.equal(existsSync(store.payloadPath(key(1))), false, 'both files of the pair');
  assert.equal(statSync(join(outDir, '1.mar')).nlink, 1, "the user's output stays, unlinked from the cache");
  assert.ok(readFileSync(join(outDir, '1.mar')).equals(payload));
});
