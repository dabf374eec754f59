/**
 * One convention across commands (README "Conventions", issue 11 item 6): -c/--config and -p/--profile
 * everywhere, the config's only profile when none is named, camelCase JSON with the old names kept, no
 * `output` in a dry run's report, serve's port as --port, `status` without a config.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { portOption } from '../../src/cli/commands/serve.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { runCli, tempDir } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { CONFIG_PATH, fixtureMar } from '../pipeline/_support.js';

const dir = tempDir('marsign-cli-conv-');
const env = { MARSIGN_CACHE_DIR: join(dir, 'cache'), MARSIGN_CONFIG: '' };
const pe = join(dir, 'in.exe');
writeFileSync(pe, buildPe({ arch: 'x64', name: 'conventions', payload: new Uint8Array(4000).fill(7) }));

/** The fixture config with a second profile: naming none is then ambiguous. */
const twoProfiles = join(dir, 'two.json');
{
  const doc = JSON.parse(readFileSync(CONFIG_PATH, 'utf8')) as { profiles: Record<string, unknown> };
  const keysDir = join(CONFIG_PATH, '..');
  const abs = JSON.parse(
    JSON.stringify(doc.profiles.dev).replace(/"keys\//g, `"${keysDir}/keys/`),
  ) as unknown;
  writeFileSync(twoProfiles, JSON.stringify({ profiles: { dev: abs, other: abs } }));
}

test('sign-pe takes -c and -p like every signing command; --profile/--config still work', async () => {
  const short = await runCli(
    ['sign-pe', pe, '-o', join(dir, 'short.exe'), '-c', CONFIG_PATH, '-p', 'dev', '--json'],
    {
      env,
    },
  );
  assert.equal(short.code, 0, short.stderr);
  const long = await runCli(
    ['sign-pe', pe, '-o', join(dir, 'long.exe'), '--config', CONFIG_PATH, '--profile', 'dev', '--json'],
    { env },
  );
  assert.equal(long.code, 0, long.stderr);
  const a = JSON.parse(short.stdout) as Record<string, unknown>;
  // camelCase names, and the 0.1 names beside them with the same values.
  assert.equal(a.outputSha256, a.sha256);
  assert.equal(a.outputSize, a.bytes);
  assert.equal(a.outputSize, readFileSync(join(dir, 'short.exe')).length);
  assert.match(String(a.outputSha256), /^[0-9a-f]{64}$/);
});

test("sign-pe, sign-mar and sign-locale use the config's only profile when none is named", async () => {
  const p = await runCli(['sign-pe', pe, '-o', join(dir, 'auto.exe'), '-c', CONFIG_PATH, '--json'], { env });
  assert.equal(p.code, 0, p.stderr);
  assert.equal((JSON.parse(p.stdout) as { profile: string }).profile, 'dev');
  const m = await runCli(
    ['sign-mar', fixtureMar('fr'), '-o', join(dir, 'auto.mar'), '-c', CONFIG_PATH, '--json'],
    {
      env,
    },
  );
  assert.equal(m.code, 0, m.stderr);
  assert.equal((JSON.parse(m.stdout) as { profile: string }).profile, 'dev');
  const out = join(dir, 'auto-de.mar');
  const l = await runCli(
    ['sign-locale', fixtureMar('de'), '-o', out, '-c', CONFIG_PATH, '-t', '2', '--json'],
    {
      env,
    },
  );
  assert.equal(l.code, 0, l.stderr);
  const manifest = JSON.parse(l.stdout) as LocaleManifest;
  assert.equal(manifest.profile, 'dev');
  // camelCase digests; the deprecated snake_case ones are still written, equal, on stdout and on disk.
  assert.match(manifest.outputSha256 ?? '', /^[0-9a-f]{64}$/);
  assert.match(manifest.outputSha512 ?? '', /^[0-9a-f]{128}$/);
  assert.equal(manifest.output_sha256, manifest.outputSha256);
  assert.equal(manifest.output_sha512, manifest.outputSha512);
  assert.equal(manifest.outputSize, readFileSync(out).length);
  const onDisk = JSON.parse(readFileSync(`${out}.manifest.json`, 'utf8')) as LocaleManifest;
  assert.equal(onDisk.outputSha256, manifest.outputSha256);
  assert.equal(onDisk.output_sha256, manifest.outputSha256);
});

test('with two profiles and none named, every signing command says PROFILE_REQUIRED and lists them', async () => {
  for (const args of [
    ['sign-locale', fixtureMar('de'), '--dry-run'],
    ['sign-pe', pe, '-o', join(dir, 'never.exe')],
    ['sign-mar', fixtureMar('de'), '-o', join(dir, 'never.mar')],
  ]) {
    const r = await runCli([...args, '-c', twoProfiles], { env });
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
    assert.match(
      r.stderr,
      /^marsign: PROFILE_REQUIRED: name a signing profile with --profile; .* has 2 \(dev, other\)$/m,
    );
  }
  assert.ok(!existsSync(join(dir, 'never.exe')) && !existsSync(join(dir, 'never.mar')));
});

test('a dry run reports no output file: plannedOutput when -o is given, nothing otherwise', async () => {
  const before = readdirSync(join(fixtureMar('de'), '..'));
  const bare = await runCli(['sign-locale', fixtureMar('de'), '--dry-run', '-c', CONFIG_PATH, '--json'], {
    env,
  });
  assert.equal(bare.code, 0, bare.stderr);
  const plan = JSON.parse(bare.stdout) as Record<string, unknown>;
  assert.equal(plan.dryRun, true);
  assert.ok(!('output' in plan), 'no output field');
  assert.ok(!('plannedOutput' in plan), 'nothing planned without -o');
  assert.doesNotMatch(bare.stdout, /\.dry-run/);

  const planned = join(dir, 'planned.mar');
  const withO = await runCli(
    ['sign-locale', fixtureMar('de'), '--dry-run', '-o', planned, '-c', CONFIG_PATH, '--json'],
    {
      env,
    },
  );
  assert.equal(withO.code, 0, withO.stderr);
  const plan2 = JSON.parse(withO.stdout) as Record<string, unknown>;
  assert.ok(!('output' in plan2));
  assert.equal(plan2.plannedOutput, planned);
  assert.ok(!existsSync(planned));

  const rel = await runCli(
    ['sign-release', join(CONFIG_PATH, '..'), '-o', join(dir, 'rel'), '--dry-run', '--json', '--no-progress'],
    { env },
  );
  assert.equal(rel.code, 0, rel.stderr);
  const report = JSON.parse(rel.stdout) as { release: string; locales: Record<string, unknown>[] };
  assert.equal(report.release, 'sample-140.0', 'named by release.json\'s "release", not the folder');
  for (const l of report.locales) {
    assert.ok(!('output' in l), `${String(l.locale)}: no output in a dry run`);
    assert.match(String(l.plannedOutput), /rel\//);
  }
  assert.ok(!existsSync(join(dir, 'rel')), 'the dry run created nothing');
  assert.deepEqual(readdirSync(join(fixtureMar('de'), '..')), before, 'nothing written beside the input');
});

test('serve: -p is not its port option any more; the old `-p N` is accepted with a warning', async () => {
  const help = await runCli(['serve', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--port/);
  assert.doesNotMatch(help.stdout, /-p,/);
  const r = await runCli(['serve', '-p', 'dev', '-c', CONFIG_PATH]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^marsign: USAGE: serve takes no profile; .*found "dev" \(use --port\)$/m);
  assert.equal(portOption({ port: 9000 }), 9000);
  assert.equal(portOption({ p: '9001' }), 9001);
  assert.equal(portOption({ p: '9001', port: 9001 }), 9001);
  assert.throws(() => portOption({ p: '9001', port: 9002 }), { code: 'USAGE' });
});

test('status needs no config: $MARSIGN_REDIS_URL is used', { skip: REDIS_SKIP }, async () => {
  const redis = await TestRedis.start();
  after(() => redis.stop());
  const empty = tempDir('marsign-noconf-');
  const r = await runCli(['status', '--json'], { env: { ...env, MARSIGN_REDIS_URL: redis.url }, cwd: empty });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), []);
  const w = await runCli(['status', '--watch', '--json', 'nope'], {
    env: { ...env, MARSIGN_REDIS_URL: redis.url },
    cwd: empty,
  });
  assert.equal(w.code, 2);
  assert.match(w.stderr, /^marsign: RELEASE_NOT_FOUND: no release "nope" in the queue$/m);
});

test('-o and -c mean the same in keys dev and cache (keys dev --out still works)', async () => {
  const keysDir = join(dir, 'devkeys');
  const k = await runCli(['keys', 'dev', '-o', keysDir, '--json'], { env });
  assert.equal(k.code, 0, k.stderr);
  assert.ok(existsSync(join(keysDir, 'marsign.config.json')));
  const old = await runCli(['keys', 'dev', '--out', join(dir, 'devkeys-old'), '--json'], { env });
  assert.equal(old.code, 0, old.stderr);
  assert.ok(existsSync(join(dir, 'devkeys-old', 'marsign.config.json')));

  const cacheDir = join(dir, 'cache-c');
  mkdirSync(cacheDir);
  const cfg = join(dir, 'cache-c.json');
  writeFileSync(cfg, JSON.stringify({ cache: { dir: cacheDir }, profiles: {} }));
  const st = await runCli(['cache', 'stats', '-c', cfg, '--json'], { env });
  assert.equal(st.code, 0, st.stderr);
  assert.equal((JSON.parse(st.stdout) as { root: string }).root, cacheDir);
});
