/** The locale-output tier from the CLI: the summary says so, `--no-output-cache` turns it off. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ReleaseReport as ReleaseManifest } from '../../src/pipeline/release.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { runCli, tempDir } from '../helpers/env.js';
import { CONFIG_PATH, fixtureMar, KEYS, RELEASE, RELEASE_CONTAINERS } from '../pipeline/_support.js';

const base = ['--profile', 'dev', '--config', CONFIG_PATH, '--threads', '2'];

test('sign-locale: a re-run is served whole (summary, manifest, marsign verify); --no-output-cache signs from the entries', async () => {
  const dir = tempDir();
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const first = join(dir, 'first.mar');
  const r1 = await runCli(['sign-locale', fixtureMar('de'), '-o', first, ...base, '--json'], { env });
  assert.equal(r1.code, 0, r1.stderr);
  assert.equal((JSON.parse(r1.stdout) as LocaleManifest).outputCache, 'miss');

  const served = join(dir, 'served.mar');
  const r2 = await runCli(['sign-locale', fixtureMar('de'), '-o', served, ...base], { env });
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /0 signed, 4 cache hits, 4 passthrough \(whole output served from the cache\)/);
  assert.ok(readFileSync(served).equals(readFileSync(first)));
  const v = await runCli([
    'verify',
    served,
    '--mar-cert',
    join(KEYS, 'mar.cert.pem'),
    '--ca',
    join(KEYS, 'ca.cert.pem'),
  ]);
  assert.equal(v.code, 0, v.stdout + v.stderr);

  const off = join(dir, 'off.mar');
  const r3 = await runCli(
    ['sign-locale', fixtureMar('de'), '-o', off, ...base, '--no-output-cache', '--json'],
    {
      env,
    },
  );
  assert.equal(r3.code, 0, r3.stderr);
  const m3 = JSON.parse(r3.stdout) as LocaleManifest;
  assert.equal(m3.outputCache, undefined);
  assert.equal(m3.totals.hits, 4, 'entries from the entry cache');
  assert.ok(readFileSync(off).equals(readFileSync(first)));

  const stats = await runCli(['cache', 'stats', '--json'], { env });
  assert.equal(stats.code, 0, stats.stderr);
  const s = JSON.parse(stats.stdout) as {
    signedEntries: { entries: number };
    peSignatures: { entries: number };
    localeOutputs: { entries: number };
  };
  assert.deepEqual([s.signedEntries.entries, s.peSignatures.entries, s.localeOutputs.entries], [4, 4, 1]);
});

test('sign-release: a re-run reports the locales served whole; --no-output-cache does not use the tier', async () => {
  const dir = tempDir();
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const r1 = await runCli(['sign-release', RELEASE, '-o', join(dir, 'a'), '--no-output-cache', '--json'], {
    env,
  });
  assert.equal(r1.code, 0, r1.stderr);
  const m1 = JSON.parse(r1.stdout) as ReleaseManifest;
  assert.equal(m1.totals.outputHits, 0);
  assert.ok(m1.locales.every((l) => l.outputCache === undefined));
  const again = await runCli(['sign-release', RELEASE, '-o', join(dir, 'b')], { env });
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stdout, /served whole/, 'nothing was stored by the first run');
  const r3 = await runCli(['sign-release', RELEASE, '-o', join(dir, 'c')], { env });
  assert.equal(r3.code, 0, r3.stderr);
  assert.match(
    r3.stdout,
    new RegExp(`${RELEASE_CONTAINERS.length} locale\\(s\\) served whole from the output cache`),
  );
});
