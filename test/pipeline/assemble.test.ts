/**
 * The warm entry path: a locale whose signed entries are all cached (the locale-output tier off) is
 * assembled in shared memory — cache hits read straight into their slots and checked on the side
 * thread while the MAR signature's hash already takes them — and never read back from the file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { HEADER_SIZE } from '../../cache/fs-store.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { Pipeline } from '../../src/pipeline/index.js';
import { finishStats } from '../../src/pipeline/finish.js';
import { sideHashStats } from '../../src/pipeline/side-hash.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { tempDir } from '../helpers/env.js';
import {
  checkSignedOutput,
  CONFIG_PATH,
  FIXTURE_SIGNED,
  fixtureMar,
  KEYS,
  newCache,
  readAll,
} from './_support.js';

let config: LoadedConfig;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
});

const sum = (tool: string, file: string): string =>
  spawnSync(tool, [file], { encoding: 'utf8' }).stdout.split(' ')[0]!;

async function run(
  cfg: LoadedConfig,
  root: string,
  secret: Buffer,
  input: string,
  output: string,
  profile = 'dev',
): Promise<{ m: LocaleManifest; corrupt: number; started: boolean }> {
  const p = await Pipeline.create({
    config: cfg,
    threads: 2,
    cache: newCache(root, secret),
    outputCache: false,
  });
  try {
    const m = await p.signLocale({ profile, input, output });
    return { m, corrupt: p.stats().cache.corrupt, started: p.pool.started };
  } finally {
    await p.close();
  }
}

for (const locale of ['en-US', 'de']) {
  test(`${locale}: a warm locale is assembled in memory, never read back; byte-identical, true digests`, async () => {
    const dir = tempDir();
    const root = join(dir, 'cache');
    const secret = Buffer.alloc(32, 9);
    const cold = join(dir, 'cold.mar');
    const c = await run(config, root, secret, fixtureMar(locale), cold);
    assert.equal(c.m.totals.signOperations, FIXTURE_SIGNED.length);

    const before = { ...finishStats };
    const sha384 = sideHashStats.threadedBy.sha384 ?? 0;
    const warm = join(dir, 'warm.mar');
    const w = await run(config, root, secret, fixtureMar(locale), warm);
    assert.equal(finishStats.assembled, before.assembled + 1, 'assembled in memory');
    assert.equal(finishStats.readBack, before.readBack, 'nothing read back');
    assert.equal(sideHashStats.threadedBy.sha384, sha384 + 1, "the MAR signature's digest on a side thread");
    assert.equal(w.started, false, 'no pool thread');
    assert.equal(w.m.totals.hits, FIXTURE_SIGNED.length);
    assert.equal(w.m.totals.signOperations, 0);
    assert.ok(readFileSync(warm).equals(readFileSync(cold)), 'byte-identical');
    assert.equal(w.m.output_sha256, sum('sha256sum', warm));
    assert.equal(w.m.output_sha512, sum('sha512sum', warm));
    assert.equal(w.m.outputSize, statSync(warm).size);
    assert.deepEqual(
      w.m.entries.map((e) => [e.name, e.outputSha256, e.inputSha256]),
      c.m.entries.map((e) => [e.name, e.outputSha256, e.inputSha256]),
    );
    await checkSignedOutput(fixtureMar(locale), warm, { signed: FIXTURE_SIGNED, dir });
  });
}

test('a cache entry that fails its check after it was used speculatively is signed again; output identical', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 10);
  const cold = join(dir, 'cold.mar');
  const c = await run(config, root, secret, fixtureMar('ja'), cold);
  // Flip a payload byte of the biggest signed entry (same size: the layout is still predicted, the
  // bytes land in their slot and are written before the side thread's check fails).
  const biggest = [...c.m.entries]
    .filter((e) => e.action === 'signed')
    .sort((a, b) => b.outputSize - a.outputSize)[0]!;
  const file = cacheFileOf(root, biggest.outputSize);
  const bytes = readFileSync(file);
  bytes[bytes.length - 50]! ^= 0x04;
  writeFileSync(file, bytes);

  const before = { ...finishStats };
  const out = join(dir, 'repaired.mar');
  const r = await run(config, root, secret, fixtureMar('ja'), out);
  assert.equal(r.corrupt, 1);
  // Produced again in the pool, but its PE's signature is in the cache: applied, not made anew.
  assert.equal(r.started, true, 'the entry went back to the pool');
  assert.equal(r.m.totals.signOperations, 0);
  assert.equal(r.m.entries.find((e) => e.name === biggest.name)!.action, 'cached');
  assert.equal(
    finishStats.readBack,
    before.readBack + 1,
    'the speculative assembly was dropped, the file read back',
  );
  assert.ok(readFileSync(out).equals(readFileSync(cold)), 'byte-identical to the clean run');
  assert.equal(r.m.output_sha256, sum('sha256sum', out));
  assert.equal(r.m.output_sha512, sum('sha512sum', out));
  await checkSignedOutput(fixtureMar('ja'), out, { signed: FIXTURE_SIGNED, dir });
  // Repaired in the cache: the next run is a clean warm one.
  const again = await run(config, root, secret, fixtureMar('ja'), join(dir, 'again.mar'));
  assert.equal(again.m.totals.signOperations, 0);
  assert.equal(again.corrupt, 0);
});

test('a profile without MAR keys is assembled too (unsigned MAR, true digests)', async () => {
  const dir = tempDir();
  writeFileSync(
    join(dir, 'marsign.config.json'),
    JSON.stringify({
      profiles: {
        pe: {
          authenticode: {
            certChain: join(KEYS, 'codesign.chain.pem'),
            key: join(KEYS, 'codesign.key.pem'),
            digest: 'sha256',
          },
        },
      },
    }),
  );
  const cfg = await loadConfig(join(dir, 'marsign.config.json'));
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 11);
  const cold = join(dir, 'cold.mar');
  await run(cfg, root, secret, fixtureMar('fr'), cold, 'pe');
  const before = { ...finishStats };
  const warm = join(dir, 'warm.mar');
  const w = await run(cfg, root, secret, fixtureMar('fr'), warm, 'pe');
  assert.equal(finishStats.assembled, before.assembled + 1);
  assert.ok(readFileSync(warm).equals(readFileSync(cold)));
  assert.equal(w.m.output_sha256, sum('sha256sum', warm));
  assert.equal(w.m.output_sha512, sum('sha512sum', warm));
  assert.equal((await readAll(warm)).info.signatures.length, 0);
});

/** The signed-entry cache file whose payload is `size` bytes (header HEADER_SIZE). */
function cacheFileOf(root: string, size: number): string {
  for (const d of readdirSync(root))
    if (/^[0-9a-f]{2}$/.test(d))
      for (const f of readdirSync(join(root, d)))
        if (/^[0-9a-f]{64}$/.test(f) && statSync(join(root, d, f)).size === HEADER_SIZE + size)
          return join(root, d, f);
  throw new Error(`no cache entry of ${size} bytes`);
}
