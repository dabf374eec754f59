import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildPe } from '../../src/formats/pe/synth.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { PROJECT_ROOT, runCli, tempDir } from '../helpers/env.js';
import {
  buildMar,
  BZ2,
  checkSignedOutput,
  CONFIG_PATH,
  FIXTURE_SIGNED,
  fixtureMar,
  XZ_BCJ,
} from '../pipeline/_support.js';

const base = ['--profile', 'dev', '--config', CONFIG_PATH, '--threads', '2'];

test('sign-locale --json signs a fixture locale; the output verifies; quiet without a TTY', async () => {
  const dir = tempDir();
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const out = join(dir, 'ja.mar');
  const r = await runCli(['sign-locale', fixtureMar('ja'), '-o', out, ...base, '--json'], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '', 'no progress output when stderr is not a terminal');
  const m = JSON.parse(r.stdout) as LocaleManifest;
  assert.equal(m.totals.misses, 4);
  await checkSignedOutput(fixtureMar('ja'), out, { signed: FIXTURE_SIGNED, dir });

  const r2 = await runCli(['sign-locale', fixtureMar('ja'), '-o', join(dir, 'ja2.mar'), ...base], { env });
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /0 signed, 4 cache hits, 4 passthrough/);
  assert.ok(readFileSync(join(dir, 'ja2.mar')).equals(readFileSync(out)));
});

test('sign-locale --dry-run prints the plan and writes nothing', async () => {
  const dir = tempDir();
  const out = join(dir, 'x.mar');
  const r = await runCli(['sign-locale', fixtureMar('de'), '-o', out, ...base, '--dry-run'], {
    env: { MARSIGN_CACHE_DIR: join(dir, 'cache') },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^sign +xul\.dll/m);
  assert.match(r.stdout, /^passthrough +omni\.ja/m);
  assert.match(r.stdout, /4 to sign, 0 cached, 4 passthrough/);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith('x.mar') || f.startsWith('.x.mar')),
    [],
  );
});

test('sign-locale errors: non-PE matched → exit 2 POLICY_NOT_PE; --skip-invalid → exit 0; missing -o → usage', async () => {
  const dir = tempDir();
  const input = join(dir, 'bad.mar');
  await buildMar(input, [
    { name: 'ok.exe', data: buildPe({ arch: 'x86' }), codec: BZ2 },
    { name: 'fake.dll', data: new TextEncoder().encode('text'), codec: BZ2 },
  ]);
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const r = await runCli(['sign-locale', input, '-o', join(dir, 'out.mar'), ...base], { env });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^marsign: POLICY_NOT_PE: .*fake\.dll/m);
  assert.equal(existsSync(join(dir, 'out.mar')), false);
  const r2 = await runCli(
    ['sign-locale', input, '-o', join(dir, 'out.mar'), ...base, '--skip-invalid', '--json'],
    {
      env,
    },
  );
  assert.equal(r2.code, 0, r2.stderr);
  const m = JSON.parse(r2.stdout) as LocaleManifest;
  assert.equal(m.entries[1]!.action, 'skipped-invalid');
  const r3 = await runCli(['sign-locale', input, ...base], { env });
  assert.equal(r3.code, 2);
  assert.match(r3.stderr, /-o\/--output is required/);
});

test(
  'SIGKILL mid-run leaves no output and no corrupt cache entry; the next run succeeds',
  { timeout: 300_000 },
  async () => {
    const dir = tempDir();
    const cache = join(dir, 'cache');
    const input = join(dir, 'big.mar');
    // Enough xz work that the run is still going when the first entries reach the cache.
    const files = Array.from({ length: 12 }, (_, i) => ({
      name: `bin/lib${String(i).padStart(2, '0')}.dll`,
      data: buildPe({ arch: 'x64', kind: 'dll', name: `lib${i}`, payload: noise(i, 500_000) }),
      codec: XZ_BCJ,
    }));
    await buildMar(input, files);
    const out = join(dir, 'out', 'big.mar');
    const outDir = join(dir, 'out');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(outDir);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'sign-locale', input, '-o', out, ...base],
      { env: { ...process.env, MARSIGN_CACHE_DIR: cache }, stdio: 'ignore' },
    );
    let exited = false;
    child.on('exit', () => (exited = true));
    const cached = (): number =>
      existsSync(cache)
        ? readdirSync(cache)
            .filter((d) => /^[0-9a-f]{2}$/.test(d))
            .reduce(
              (n, d) => n + readdirSync(join(cache, d)).filter((f) => /^[0-9a-f]{64}$/.test(f)).length,
              0,
            )
        : 0;
    while (!exited && !(cached() >= 1 && readdirSync(outDir).some((f) => f.endsWith('.tmp'))))
      await sleep(10);
    assert.equal(exited, false, 'the run finished before it could be killed; make the input bigger');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    const killedAt = cached();
    assert.ok(killedAt >= 1 && killedAt < files.length, `killed mid-run with ${killedAt} cached entries`);
    assert.equal(existsSync(out), false, 'no output under the real name');
    assert.equal(existsSync(`${out}.manifest.json`), false);

    const v = await runCli(['cache', 'verify', '--cache-dir', cache, '--json'], {
      env: { MARSIGN_CACHE_DIR: cache },
    });
    assert.equal(v.code, 0, v.stdout + v.stderr);
    const report = JSON.parse(v.stdout) as { bad: unknown[]; checked: number };
    assert.deepEqual(report.bad, []);
    assert.ok(report.checked >= killedAt);

    const r = await runCli(['sign-locale', input, '-o', out, ...base, '--json'], {
      env: { MARSIGN_CACHE_DIR: cache },
    });
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout) as LocaleManifest;
    assert.ok(m.totals.hits >= killedAt, `entries cached before the kill are hits (${m.totals.hits})`);
    await checkSignedOutput(input, out, { signed: files.map((f) => f.name), dir, osslsigncodeLimit: 2 });
  },
);

/** Poorly compressible, deterministic bytes (slow enough xz work to interrupt). */
function noise(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let s = (seed + 1) * 2654435761;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = i % 3 === 0 ? 0x41 : s >>> 24;
  }
  return out;
}
