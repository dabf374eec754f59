/**
 * The CLI over a cache someone else can write to (issue 10 items 2 and 3): planted symlinks and FIFOs
 * must not make `cache verify` or `sign-locale` hang, write outside the cache, or leave temp files; verify
 * reports them and --repair removes them. Fixtures are planted at test time; runCli's timeout turns a hang
 * into a failure (the child is killed).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadOrCreateSecret } from '../../cache/defaults.js';
import { FsCacheStore } from '../../cache/fs-store.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { runCli, tempDir } from '../helpers/env.js';
import { checkSignedOutput, CONFIG_PATH, FIXTURE_SIGNED, fixtureMar } from '../pipeline/_support.js';

const base = ['--profile', 'dev', '--config', CONFIG_PATH, '--threads', '2'];
/** Long enough for a loaded machine, short enough that a hang fails the test rather than the suite. */
const TIMEOUT_MS = 60_000;

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  assert.equal(r.status, 0, `mkfifo ${path}: ${r.stderr}`);
}

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
      } else
        out[r] = st.isFile()
          ? `file ${createHash('sha256').update(readFileSync(p)).digest('hex')}`
          : `other ${st.mode}`;
    }
  };
  walk(dir, '');
  return out;
}

function outsideDir(): string {
  const dir = tempDir('marsign-outside-');
  writeFileSync(join(dir, 'hosts'), '127.0.0.1 localhost\n');
  return dir;
}

/** Every dot file (temps, quarantine files) under `dir`, recursively. */
function dotFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name.startsWith('.') && name !== '.hmac-secret') out.push(p);
    else if (lstatSync(p).isDirectory()) out.push(...dotFiles(p));
  }
  return out;
}

test('cache verify reports FIFOs and planted links by type and path without hanging; --repair removes them (the links, not their targets)', async () => {
  const dir = tempDir();
  const cache = join(dir, 'cache');
  const outside = outsideDir();
  const store = new FsCacheStore({ root: cache, hmacSecret: await loadOrCreateSecret(cache) });
  const good = 'aa' + '01'.repeat(31);
  await store.put(good, new Uint8Array(4000).fill(1));
  mkfifo(join(cache, 'aa', 'aa' + '02'.repeat(31)));
  mkfifo(join(cache, 'aa', `.${good}.77.a1b2c3d4e5f6.tmp`));
  symlinkSync(outside, join(cache, 'bb'));
  symlinkSync(join(outside, 'hosts'), join(cache, 'aa', 'aa' + '03'.repeat(31)));
  const before = snapshot(outside);
  const real = realpathSync(cache);
  const expected = [
    { path: join(real, 'aa', `.${good}.77.a1b2c3d4e5f6.tmp`), type: 'fifo' },
    { path: join(real, 'aa', 'aa' + '02'.repeat(31)), type: 'fifo' },
    { path: join(real, 'aa', 'aa' + '03'.repeat(31)), type: 'symlink' },
    { path: join(real, 'bb'), type: 'symlink' },
  ];

  const v = await runCli(['cache', 'verify', '--json', '--cache-dir', cache], { timeoutMs: TIMEOUT_MS });
  assert.equal(v.code, 1, `exit 1 while unsafe things remain (a hang is -1): ${v.stderr}`);
  const doc = JSON.parse(v.stdout) as { checked: number; ok: number; unsafe: typeof expected };
  assert.deepEqual([doc.checked, doc.ok], [1, 1]);
  assert.deepEqual(doc.unsafe, expected);

  const human = await runCli(['cache', 'verify', '--cache-dir', cache], { timeoutMs: TIMEOUT_MS });
  assert.equal(human.code, 1);
  assert.match(human.stdout, new RegExp(`unsafe symlink ${join(real, 'bb')}\\n`));

  const repair = await runCli(['cache', 'verify', '--repair', '--json', '--cache-dir', cache], {
    timeoutMs: TIMEOUT_MS,
  });
  assert.equal(repair.code, 0, repair.stderr);
  assert.deepEqual(
    (JSON.parse(repair.stdout) as { unsafe: unknown[] }).unsafe,
    expected.map((e) => ({ ...e, removed: true })),
  );
  for (const e of expected) assert.equal(existsSync(e.path) || isLink(e.path), false, `${e.path} removed`);
  assert.deepEqual(snapshot(outside), before, 'the link targets are untouched');
  const again = await runCli(['cache', 'verify', '--json', '--cache-dir', cache], { timeoutMs: TIMEOUT_MS });
  assert.equal(again.code, 0, again.stdout);
  assert.deepEqual((JSON.parse(again.stdout) as { unsafe: unknown[] }).unsafe, []);
});

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/**
 * Sign `de` into a fresh cache, plant (a prefix directory without the output linked to an outside
 * directory; with `fifos` also a FIFO for an entry elsewhere and for the output's .out), sign again, and
 * check the second run.
 */
async function signOverHostileCache(fifos: boolean): Promise<void> {
  const dir = tempDir();
  const cache = join(dir, 'cache');
  const env = { MARSIGN_CACHE_DIR: cache };
  const outside = outsideDir();
  const first = join(dir, 'first.mar');
  const r1 = await runCli(['sign-locale', fixtureMar('de'), '-o', first, ...base], {
    env,
    timeoutMs: TIMEOUT_MS,
  });
  assert.equal(r1.code, 0, r1.stderr);

  // What the first run stored: one locale output, and the signed entries (and PE signatures).
  const prefixes = readdirSync(cache).filter((n) => /^[0-9a-f]{2}$/.test(n));
  const files = prefixes.flatMap((p) => readdirSync(join(cache, p)).map((n) => ({ p, n })));
  const out = files.find((f) => f.n.endsWith('.out'))!;
  assert.ok(out, 'a locale output was stored');
  const entries = files.filter((f) => /^[0-9a-f]{64}$/.test(f.n));
  assert.equal(entries.length, 4);
  const linked = entries.find((f) => f.p !== out.p)!;
  const fifo = entries.find((f) => f.p !== out.p && f.p !== linked.p) ?? entries.find((f) => f.p === out.p)!;
  assert.ok(linked && fifo && fifo.p !== linked.p);
  rmSync(join(cache, linked.p), { recursive: true });
  symlinkSync(outside, join(cache, linked.p));
  if (fifos) {
    unlinkSync(join(cache, fifo.p, fifo.n));
    mkfifo(join(cache, fifo.p, fifo.n));
    unlinkSync(join(cache, out.p, out.n));
    mkfifo(join(cache, out.p, out.n));
  }
  const before = snapshot(outside);

  const second = join(dir, 'out', 'de.mar');
  mkdirSync(join(dir, 'out'));
  // Without the FIFO .out the stored output would be served whole and no entry read: the entry tier
  // is what the link is planted for.
  const flags = fifos ? [] : ['--no-output-cache'];
  const r2 = await runCli(['sign-locale', fixtureMar('de'), '-o', second, ...base, ...flags, '--json'], {
    env,
    timeoutMs: TIMEOUT_MS,
  });
  assert.equal(r2.code, 0, `no hang, no error (a hang is -1): ${r2.stderr}`);
  const m = JSON.parse(r2.stdout) as LocaleManifest;
  if (fifos) assert.equal(m.outputCache, 'miss', 'the FIFO .out is a miss, not a hang');
  assert.equal(m.totals.hits, 4, 'the bad entries were rebuilt (from their stored PE signatures)');
  assert.ok(readFileSync(second).equals(readFileSync(first)), 'the same output as before');
  await checkSignedOutput(fixtureMar('de'), second, { signed: FIXTURE_SIGNED, dir });
  assert.deepEqual(snapshot(outside), before, 'nothing written outside the cache');
  assert.ok(lstatSync(join(cache, linked.p)).isDirectory(), 'the link was replaced by a real directory');
  assert.ok(lstatSync(join(cache, linked.p, linked.n)).isFile(), 'its entry stored again, inside the cache');
  if (fifos) {
    assert.ok(lstatSync(join(cache, fifo.p, fifo.n)).isFile(), 'the FIFO replaced by the entry');
    assert.ok(lstatSync(join(cache, out.p, out.n)).isFile(), 'the FIFO .out replaced by the output');
  }
  assert.deepEqual(dotFiles(join(dir, 'out')), [], 'no temp file beside the output');
  assert.deepEqual(dotFiles(cache), [], 'no temp or quarantine file in the cache');

  const v = await runCli(['cache', 'verify', '--json', '--cache-dir', cache], { timeoutMs: TIMEOUT_MS });
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const doc = JSON.parse(v.stdout) as { bad: unknown[]; unsafe: unknown[]; checked: number };
  assert.deepEqual([doc.bad, doc.unsafe], [[], []]);
  assert.equal(doc.checked, 13, '4 entries, 4 PE signatures, 4 passthrough check markers, 1 locale output');
}

test('sign-locale over a cache whose prefix directory was replaced by a link to a system directory: the entry is stored inside the cache, nothing outside', async () => {
  await signOverHostileCache(false);
});

test('sign-locale over a cache with a FIFO .out, a FIFO entry and a linked prefix directory: no hang, the right output, nothing outside, no temp left', async () => {
  await signOverHostileCache(true);
});
