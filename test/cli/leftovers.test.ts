/**
 * Issue 10 item 8: temps that killed runs leave beside their outputs are removed by the next run (those
 * of live processes are not), and a killed sign-release never leaves a SHA512SUMS that lists a digest
 * its file no longer has.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadPid, PROJECT_ROOT, runCli, TSX_IMPORT, tempDir } from '../helpers/env.js';
import { CONFIG_PATH, fixtureMar, LOCALES } from '../pipeline/_support.js';

const base = ['--profile', 'dev', '--config', CONFIG_PATH, '--threads', '2'];

/** Every `*.tmp` under `dir`, recursively (relative paths). */
function temps(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    if (lstatSync(join(dir, name)).isDirectory()) out.push(...temps(join(dir, name), r));
    else if (name.endsWith('.tmp')) out.push(r);
  }
  return out;
}

test("sign-locale removes the temps killed runs left for its output and manifest; a live process's stay", async () => {
  const dir = tempDir();
  const out = join(dir, 'de.mar');
  const dead = deadPid();
  const live = process.pid; // this test process: alive while the CLI runs
  const left = [
    `.de.mar.${dead}.0123456789ab.tmp`,
    `.de.mar.manifest.json.${dead}.0123456789ac.tmp`,
    `.de.mar.${deadPid()}.0123456789ad.tmp`,
  ];
  const kept = [`.de.mar.${live}.0123456789ae.tmp`, `.fr.mar.${dead}.0123456789af.tmp`];
  for (const n of [...left, ...kept]) writeFileSync(join(dir, n), 'partial output of a killed run');
  const r = await runCli(['sign-locale', fixtureMar('de'), '-o', out, ...base], {
    env: { MARSIGN_CACHE_DIR: join(dir, 'cache') },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(temps(dir).sort(), kept.sort());
});

test('sign-release killed after its first output was replaced: SHA512SUMS never lists a wrong digest; the re-run removes the leftovers and writes sums that check', async () => {
  const dir = tempDir();
  const out = join(dir, 'out');
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  // Twelve locales (the four fixtures three times), one at a time, so the run is still going well after
  // its first output is renamed into place.
  const locales: Record<string, string> = {};
  for (const round of [1, 2, 3]) for (const l of LOCALES) locales[`${l}-${round}`] = fixtureMar(l);
  const request = join(dir, 'release.json');
  writeFileSync(request, JSON.stringify({ release: 'r1', profile: 'dev', locales }));
  // A previous release in the output directory: different bytes, and sums that match them.
  const sums: string[] = [];
  const before = new Map<string, number>();
  for (const l of Object.keys(locales)) {
    mkdirSync(join(out, l), { recursive: true });
    const p = join(out, l, 'complete.mar');
    const old = Buffer.from(`the previous release's ${l}\n`);
    writeFileSync(p, old);
    before.set(l, statSync(p).ino);
    sums.push(`${createHash('sha512').update(old).digest('hex')}  ${l}/complete.mar\n`);
  }
  writeFileSync(join(out, 'SHA512SUMS'), sums.join(''));
  assert.equal(spawnSync('sha512sum', ['-c', '--quiet', 'SHA512SUMS'], { cwd: out }).status, 0);

  const child = spawn(
    process.execPath,
    [
      '--import',
      TSX_IMPORT,
      join(PROJECT_ROOT, 'src/cli/main.ts'),
      'sign-release',
      request,
      '-o',
      out,
      ...base,
      '--concurrency',
      '1',
    ],
    { env: { ...process.env, ...env }, stdio: 'ignore' },
  );
  let exited = false;
  child.on('exit', () => (exited = true));
  const replaced = (): string[] =>
    [...before]
      .filter(([l, ino]) => {
        try {
          return statSync(join(out, l, 'complete.mar')).ino !== ino;
        } catch {
          return false;
        }
      })
      .map(([l]) => l);
  const deadline = Date.now() + 240_000;
  while (!exited && replaced().length === 0 && Date.now() < deadline) await sleep(2);
  child.kill('SIGKILL');
  await new Promise((r) =>
    child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('close', r),
  );
  const n = replaced().length;
  assert.ok(n >= 1 && n < before.size, `killed with ${n} of ${before.size} outputs replaced`);

  // Missing is fine; present, every line must check.
  if (existsSync(join(out, 'SHA512SUMS'))) {
    const c = spawnSync('sha512sum', ['-c', 'SHA512SUMS'], { cwd: out, encoding: 'utf8' });
    assert.equal(c.status, 0, `a stale SHA512SUMS after the kill:\n${c.stdout}${c.stderr}`);
  }
  assert.equal(existsSync(join(out, 'release-manifest.json')), false);

  // What killed runs leave (the kill above may or may not have been mid-write): temps of dead pids for
  // outputs, manifests and the release files; and one of a live process, which must stay.
  const dead = deadPid();
  const planted = [
    `de-1/.complete.mar.${dead}.0123456789ab.tmp`,
    `ja-3/.complete.mar.manifest.json.${dead}.0123456789ac.tmp`,
    `.SHA512SUMS.${dead}.0123456789ad.tmp`,
    `.release-manifest.json.${dead}.0123456789ae.tmp`,
  ];
  const live = `fr-2/.complete.mar.${process.pid}.0123456789af.tmp`;
  for (const p of [...planted, live]) writeFileSync(join(out, p), 'partial');
  const r = await runCli(['sign-release', request, '-o', out, ...base, '--json'], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(temps(out), [live], 'every temp of a dead process is gone');
  const c = spawnSync('sha512sum', ['-c', 'SHA512SUMS'], { cwd: out, encoding: 'utf8' });
  assert.equal(c.status, 0, c.stdout + c.stderr);
  assert.equal(c.stdout.trim().split('\n').length, before.size);
  assert.ok(readFileSync(join(out, 'release-manifest.json'), 'utf8').includes('"release": "r1"'));
});
