import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import type { ReleaseReport as ReleaseManifest } from '../../src/pipeline/release.js';
import { runCli, tempDir } from '../helpers/env.js';
import {
  checkSignedOutput,
  CONFIG_PATH,
  FIXTURE_SIGNED,
  fixtureMar,
  LOCALES,
  RELEASE,
  RELEASE_CONTAINERS,
  releaseOutput,
  ZIP_SIGNED,
} from '../pipeline/_support.js';

/** Distinct PEs in the sample release (3 shared by every locale, in 2 codecs, + one helper.exe per locale). */
const DISTINCT_SIGNABLE = 3 + LOCALES.length;

test('sign-release DIR -o OUT with no other flags: every locale signed, summary, manifests, SHA512SUMS; rerun is all cached', async () => {
  const dir = tempDir();
  const out = join(dir, 'out');
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const r = await runCli(['sign-release', RELEASE, '-o', out], { env });
  assert.equal(r.code, 0, r.stderr);
  // Four locale MARs and the Windows build zip (its PEs are the en-US MAR's: signed once for both).
  assert.match(r.stdout, /locales: +5\n/);
  assert.match(
    r.stdout,
    new RegExp(
      `entries: +44 — ${DISTINCT_SIGNABLE} signed, ${20 - DISTINCT_SIGNABLE} shared, 0 from the cache, 24 passthrough`,
    ),
  );
  assert.match(r.stdout, /hit rate/);
  const sums = spawnSync('sha512sum', ['-c', 'SHA512SUMS'], { cwd: out, encoding: 'utf8' });
  assert.equal(sums.status, 0, sums.stdout + sums.stderr);
  assert.equal(sums.stdout.trim().split('\n').length, RELEASE_CONTAINERS.length);
  const rm = JSON.parse(readFileSync(join(out, 'release-manifest.json'), 'utf8')) as ReleaseManifest;
  assert.equal(rm.profile, 'dev');
  assert.equal(rm.release, 'sample-140.0', "named by the directory's release.json");
  assert.equal(rm.totals.signOperations, DISTINCT_SIGNABLE);
  for (const l of LOCALES)
    await checkSignedOutput(fixtureMar(l), join(out, l, 'complete.mar'), { signed: FIXTURE_SIGNED, dir });
  for (const l of RELEASE_CONTAINERS) {
    const lm = JSON.parse(readFileSync(`${releaseOutput(out, l)}.manifest.json`, 'utf8')) as LocaleManifest;
    assert.equal(rm.locales.find((x) => x.locale === l)!.outputSha512, lm.output_sha512);
    assert.equal(lm.container, l === 'win64' ? 'zip' : 'mar');
  }

  const before = Object.fromEntries(RELEASE_CONTAINERS.map((l) => [l, readFileSync(releaseOutput(out, l))]));
  const r2 = await runCli(['sign-release', RELEASE, '-o', out, '--json'], { env });
  assert.equal(r2.code, 0, r2.stderr);
  const m2 = JSON.parse(r2.stdout) as ReleaseManifest;
  assert.equal(m2.totals.signOperations, 0);
  assert.equal(m2.totals.hits, 20);
  assert.equal(m2.totals.cached, 20);
  assert.equal(m2.totals.cacheHitRate, 1);
  for (const l of RELEASE_CONTAINERS)
    assert.ok(readFileSync(releaseOutput(out, l)).equals(before[l]!), `${l} identical`);
});

test('sign-release release.json: paths relative to the JSON, profile from it, outputs <out>/<locale>/<file>', async () => {
  const dir = tempDir();
  const spec = {
    release: 'rc1',
    profile: 'dev',
    locales: { fr: join(RELEASE, 'fr', 'complete.mar'), de: join(RELEASE, 'de', 'complete.mar') },
  };
  writeFileSync(join(dir, 'release.json'), JSON.stringify(spec));
  const out = join(dir, 'out');
  const r = await runCli(
    ['sign-release', join(dir, 'release.json'), '-o', out, '--config', CONFIG_PATH, '--json'],
    {
      env: { MARSIGN_CACHE_DIR: join(dir, 'cache') },
    },
  );
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout) as ReleaseManifest;
  assert.equal(m.release, 'rc1');
  assert.deepEqual(
    m.locales.map((l) => l.locale),
    ['fr', 'de'],
  );
  // fr and de share their three xz binaries: 3 + 2 helpers signed once each.
  assert.equal(m.totals.signOperations, 5);
  await checkSignedOutput(fixtureMar('fr'), join(out, 'fr', 'complete.mar'), { signed: FIXTURE_SIGNED, dir });

  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ release: 'x', locales: { '../evil': 'a.mar' } }));
  const bad = await runCli(['sign-release', join(dir, 'bad.json'), '-o', out, '--config', CONFIG_PATH]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^marsign: RELEASE_SCHEMA: locale "\.\.\/evil"/m);
});

test('two sign-release processes on one cache at once: both outputs correct, no entry signed twice in a process', async () => {
  const dir = tempDir();
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const outs = [join(dir, 'a'), join(dir, 'b')];
  const runs = await Promise.all(
    outs.map((o) =>
      runCli(['sign-release', RELEASE, '-o', o, '--config', CONFIG_PATH, '--profile', 'dev', '--json'], {
        env,
      }),
    ),
  );
  const keyOf = (e: LocaleManifest['entries'][number]) => `${e.codec}|${e.inputSha256}`;
  let total = 0;
  /** The distinct passthrough blobs checked (a stored MAR entry needs no decode, so no marker). */
  const checkedBlobs = new Set<string>();
  for (const [i, r] of runs.entries()) {
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout) as ReleaseManifest;
    assert.equal(m.totals.failed, 0);
    assert.ok(m.totals.signOperations <= DISTINCT_SIGNABLE, `process ${i} signed ${m.totals.signOperations}`);
    total += m.totals.signOperations;
    // Per-entry actions: within one process each distinct input is signed at most once.
    const misses = new Map<string, number>();
    for (const l of m.locales) {
      const lm = JSON.parse(readFileSync(l.manifest!, 'utf8')) as LocaleManifest;
      for (const e of lm.entries) {
        if (e.action === 'signed') misses.set(keyOf(e), (misses.get(keyOf(e)) ?? 0) + 1);
        if (e.action !== 'passthrough') continue;
        assert.ok(e.check === 'decoded' || e.check === 'cached', `${e.name}: checked`);
        if (lm.container === 'zip' || e.codec !== 'none') checkedBlobs.add(keyOf(e));
      }
    }
    assert.ok(
      [...misses.values()].every((n) => n === 1),
      JSON.stringify([...misses]),
    );
    assert.equal([...misses.values()].length, m.totals.signOperations);
  }
  assert.ok(total >= DISTINCT_SIGNABLE && total <= 2 * DISTINCT_SIGNABLE);
  for (const l of LOCALES) {
    const a = readFileSync(join(outs[0]!, l, 'complete.mar'));
    const b = readFileSync(join(outs[1]!, l, 'complete.mar'));
    assert.ok(a.equals(b), `${l}: both processes wrote the same bytes`);
    await checkSignedOutput(fixtureMar(l), join(outs[0]!, l, 'complete.mar'), {
      signed: FIXTURE_SIGNED,
      dir,
    });
  }
  const v = await runCli(['cache', 'verify', '--json'], { env });
  assert.equal(v.code, 0, v.stdout);
  // The signed entries (3 PEs × 2 codecs + the helpers, and the zip's 4 in deflate/stored), each PE's
  // signature, one output per container, one passthrough check marker per distinct blob checked.
  assert.ok(checkedBlobs.size > 0);
  assert.equal(
    (JSON.parse(v.stdout) as { checked: number }).checked,
    3 * 2 +
      LOCALES.length +
      ZIP_SIGNED.length +
      DISTINCT_SIGNABLE +
      RELEASE_CONTAINERS.length +
      checkedBlobs.size,
  );
});
