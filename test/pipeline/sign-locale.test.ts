import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { Pipeline } from '../../src/pipeline/index.js';
import { peCorpus, tempDir } from '../helpers/env.js';
import {
  buildMar,
  BZ2,
  checkSignedOutput,
  CONFIG_PATH,
  FIXTURE_SIGNED,
  fixtureMar,
  KEYS,
  newCache,
  readAll,
  XZ_BCJ,
} from './_support.js';

let config: LoadedConfig;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
});

describe('sign-locale on the sample release', () => {
  const dir = tempDir();
  const cacheRoot = join(dir, 'cache');
  const secret = Buffer.alloc(32, 7);
  let pipeline: Pipeline;
  before(async () => {
    pipeline = await Pipeline.create({ config, threads: 2, cache: newCache(cacheRoot, secret) });
  });
  after(() => pipeline.close());

  for (const locale of ['en-US', 'de']) {
    test(`${locale}: output MAR and every inner PE verify; passthrough, order, flags, PIB, codecs preserved`, async () => {
      const out = join(dir, `${locale}.mar`);
      const m = await pipeline.signLocale({ profile: 'dev', input: fixtureMar(locale), output: out });
      await checkSignedOutput(fixtureMar(locale), out, { signed: FIXTURE_SIGNED, dir });
      assert.deepEqual(
        m.entries.filter((e) => e.action !== 'passthrough').map((e) => e.name),
        FIXTURE_SIGNED,
      );
      // en-US (bz2) runs first and signs its 4 PEs; de (xz) holds 3 of the same PEs: their signatures
      // come from the cache (applied, re-encoded as xz), only its own helper.exe is signed.
      assert.equal(m.totals.signed + m.totals.cached, 4);
      assert.equal(m.totals.signed, locale === 'en-US' ? 4 : 1);
      assert.equal(m.totals.signOperations, m.totals.signed);
      assert.equal(m.totals.passthrough, 4);
      const bytes = readFileSync(out);
      const { createHash } = await import('node:crypto');
      assert.equal(m.output_sha256, createHash('sha256').update(bytes).digest('hex'));
      assert.equal(m.output_sha512, createHash('sha512').update(bytes).digest('hex'));
      assert.equal(m.outputSize, bytes.length);
      const onDisk = JSON.parse(readFileSync(`${out}.manifest.json`, 'utf8')) as typeof m;
      assert.deepEqual(onDisk.totals, m.totals);
      for (const e of m.entries) {
        if (e.action === 'passthrough') assert.equal(e.outputSha256, e.inputSha256);
        else assert.notEqual(e.outputSha256, e.inputSha256);
      }
    });
  }

  test('a second run (new process state, same cache) is byte-identical with zero signing operations', async () => {
    const first = readFileSync(join(dir, 'de.mar'));
    const again = await Pipeline.create({ config, threads: 2, cache: newCache(cacheRoot, secret) });
    try {
      const out = join(dir, 'de-again.mar');
      const m = await again.signLocale({ profile: 'dev', input: fixtureMar('de'), output: out });
      assert.ok(readFileSync(out).equals(first), 'byte-identical output');
      assert.equal(m.totals.signOperations, 0);
      assert.equal(m.totals.cached, 4);
      assert.equal(m.totals.hits, 4, 'the older name of shared + cached');
      assert.equal(m.totals.misses, 0);
      assert.equal(again.stats().signOperations, 0);
      assert.equal(again.stats().cache.hits, 4);
    } finally {
      await again.close();
    }
  });

  test('dry run plans cached / to-sign / passthrough entries and writes nothing', async () => {
    const out = join(dir, 'dry.mar');
    const m = await pipeline.signLocale({
      profile: 'dev',
      input: fixtureMar('fr'),
      output: out,
      dryRun: true,
    });
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.manifest.json`), false);
    assert.equal(m.dryRun, true);
    // fr shares firefox.exe, xul.dll, updater.exe (xz) with de; its helper.exe is its own.
    const actions = Object.fromEntries(m.entries.map((e) => [e.name, e.action]));
    assert.deepEqual(actions, {
      'update.manifest': 'passthrough',
      'firefox.exe': 'cached',
      'xul.dll': 'cached',
      'updater.exe': 'cached',
      'omni.ja': 'passthrough',
      'uninstall/helper.exe': 'signed',
      'defaults/pref/channel-prefs.js': 'passthrough',
      'locale.ini': 'passthrough',
    });
  });
});

test('locales signed concurrently through one pipeline sign each shared binary once', async () => {
  const dir = tempDir();
  const pipeline = await Pipeline.create({ config, threads: 2, cache: newCache(join(dir, 'cache')) });
  try {
    const ms = await Promise.all(
      ['de', 'fr'].map((l) =>
        pipeline.signLocale({ profile: 'dev', input: fixtureMar(l), output: join(dir, `${l}.mar`) }),
      ),
    );
    // 3 shared xz binaries + one helper.exe per locale = 5 distinct signing jobs.
    assert.equal(ms[0]!.totals.signOperations + ms[1]!.totals.signOperations, 5);
    assert.equal(pipeline.stats().signOperations, 5);
    for (const name of ['firefox.exe', 'xul.dll', 'updater.exe']) {
      const acts = ms.map((m) => m.entries.find((e) => e.name === name)!.action).sort();
      assert.deepEqual(acts, ['shared', 'signed'], name);
    }
    for (const l of ['de', 'fr'])
      await checkSignedOutput(fixtureMar(l), join(dir, `${l}.mar`), { signed: FIXTURE_SIGNED, dir });
  } finally {
    await pipeline.close();
  }
});

test('cache tampering (flipped byte, truncation, wrong key, wrong HMAC secret) is detected and repaired', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 1);
  const p1 = await Pipeline.create({ config, threads: 2, cache: newCache(root, secret) });
  const clean = join(dir, 'clean.mar');
  try {
    await p1.signLocale({ profile: 'dev', input: fixtureMar('en-US'), output: clean });
  } finally {
    await p1.close();
  }
  const cleanBytes = readFileSync(clean);
  const entries = listCacheFiles(root, 'entry');
  assert.equal(entries.length, 4);
  assert.equal(listCacheFiles(root, 'signature').length, 4, "each PE's signature is stored too");
  const [a, b, c, d] = entries as [string, string, string, string];
  const flip = readFileSync(a);
  flip[flip.length - 10]! ^= 0x01;
  writeFileSync(a, flip);
  writeFileSync(b, readFileSync(b).subarray(0, 200));
  writeFileSync(c, readFileSync(d)); // a valid entry stored under another key

  const run = async (s: Buffer, name: string) => {
    // The entry tier (the locale-output tier, which would serve the whole locale, has its own tests).
    const p = await Pipeline.create({ config, threads: 2, cache: newCache(root, s), outputCache: false });
    try {
      const out = join(dir, name);
      const m = await p.signLocale({ profile: 'dev', input: fixtureMar('en-US'), output: out });
      assert.ok(readFileSync(out).equals(cleanBytes), 'repaired output is byte-identical');
      return { m, stats: p.stats(), started: p.pool.started };
    } finally {
      await p.close();
    }
  };
  const r1 = await run(secret, 'r1.mar');
  // The three bad entries are produced again in the pool, their PEs' stored signatures applied anew.
  assert.equal(r1.started, true);
  assert.equal(r1.m.totals.signOperations, 0);
  assert.equal(r1.m.totals.cached, 4);
  assert.ok(r1.stats.cache.corrupt >= 3, `corrupt counted: ${r1.stats.cache.corrupt}`);
  const report = await newCache(root, secret).verify();
  assert.equal(report.bad.length, 0, JSON.stringify(report.bad));

  const r2 = await run(Buffer.alloc(32, 2), 'r2.mar');
  assert.equal(r2.m.totals.signed, 4, 'every entry and signature fails the HMAC of another secret');
  assert.equal(r2.m.totals.signOperations, 4);
  await checkSignedOutput(fixtureMar('en-US'), join(dir, 'r2.mar'), { signed: FIXTURE_SIGNED, dir });
});

/** Signed-entry files (`<key>`) or PE-signature files (`<key>.sig`) of a cache directory, sorted. */
function listCacheFiles(root: string, kind: 'entry' | 'signature'): string[] {
  const name = kind === 'entry' ? /^[0-9a-f]{64}$/ : /^[0-9a-f]{64}\.sig$/;
  const out: string[] = [];
  for (const d of readdirSync(root).sort()) {
    const p = join(root, d);
    if (!/^[0-9a-f]{2}$/.test(d) || !statSync(p).isDirectory()) continue;
    for (const f of readdirSync(p).sort()) if (name.test(f)) out.push(join(p, f));
  }
  return out;
}

describe('signing policy', () => {
  const dir = tempDir();
  let pipeline: Pipeline;
  const pe = buildPe({ arch: 'x86', kind: 'dll', name: 'policy' });
  const input = join(dir, 'in.mar');
  before(async () => {
    const cfg = {
      profiles: Object.fromEntries(
        (
          [
            ['excl', { exclude: ['vendor/**'] }],
            ['strict', {}],
            ['lenient', { onInvalid: 'skip' }],
          ] as const
        ).map(([name, policy]) => [
          name,
          {
            authenticode: {
              certChain: join(KEYS, 'codesign.chain.pem'),
              key: join(KEYS, 'codesign.key.pem'),
              digest: 'sha256',
            },
            mar: { keys: [join(KEYS, 'mar.key.pem')], algorithm: 'sha384' },
            policy,
          },
        ]),
      ),
    };
    writeFileSync(join(dir, 'marsign.config.json'), JSON.stringify(cfg));
    const cfgLoaded = await loadConfig(join(dir, 'marsign.config.json'));
    pipeline = await Pipeline.create({ config: cfgLoaded, threads: 2, cache: null });
    await buildMar(input, [
      { name: 'app.dll', data: pe, codec: BZ2 },
      {
        name: 'vendor/third.dll',
        data: buildPe({ arch: 'x64', kind: 'dll', name: 'vendor' }),
        codec: XZ_BCJ,
      },
      { name: 'readme.dll', data: new TextEncoder().encode('not a PE at all'), codec: BZ2 },
    ]);
  });
  after(() => pipeline?.close());

  test('a matched non-PE is a PolicyError POLICY_NOT_PE and no output is written', async () => {
    const out = join(dir, 'strict.mar');
    await assert.rejects(
      pipeline.signLocale({ profile: 'strict', input, output: out }),
      (e: Error & { code?: string }) => e.name === 'PolicyError' && e.code === 'POLICY_NOT_PE',
    );
    assert.equal(existsSync(out), false);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('strict')),
      [],
      'no temp file left',
    );
  });

  test('--skip-invalid passes it through unchanged and records the error', async () => {
    for (const [profile, skipInvalid] of [
      ['strict', true],
      ['lenient', false],
    ] as const) {
      const out = join(dir, `${profile}-skip.mar`);
      const m = await pipeline.signLocale({ profile, input, output: out, skipInvalid });
      const rec = m.entries.find((e) => e.name === 'readme.dll')!;
      assert.equal(rec.action, 'skipped-invalid');
      assert.equal(rec.error?.code, 'POLICY_NOT_PE');
      assert.equal(rec.error?.name, 'PolicyError');
      assert.equal(m.totals.skippedInvalid, 1);
      await checkSignedOutput(input, out, { signed: ['app.dll', 'vendor/third.dll'], dir });
    }
  });

  test('exclude globs pass matching entries through', async () => {
    const out = join(dir, 'excl.mar');
    const m = await pipeline.signLocale({ profile: 'excl', input, output: out, skipInvalid: true });
    assert.equal(m.entries.find((e) => e.name === 'vendor/third.dll')!.action, 'passthrough');
    await checkSignedOutput(input, out, { signed: ['app.dll'], dir });
  });
});

test(
  'sign-locale on a MAR of real third-party PE files (bz2 and xz+BCJ)',
  { timeout: 600_000 },
  async (t) => {
    const corpus = peCorpus();
    if (typeof corpus === 'string') return t.skip(corpus);
    // One file under 1 MB from each corpus folder (wine, mingw, nsis, efi, ...), alternating codecs.
    const byDir = new Map<string, string>();
    for (const f of corpus) {
      const folder = basename(join(f, '..'));
      if (!byDir.has(folder) && /\.(exe|dll|efi)$/i.test(f) && statSync(f).size < 1_000_000)
        byDir.set(folder, f);
    }
    assert.ok(byDir.size >= 4, `corpus folders: ${[...byDir.keys()].join(', ')}`);
    const dir = tempDir();
    const input = join(dir, 'corpus.mar');
    const files = [...byDir.entries()].map(([folder, f], i) => {
      const name = `bin/${folder}-${basename(f)}`.replace(/\.(efi|EFI)$/, '.efi.dll');
      return { name, data: readFileSync(f) as Uint8Array, flags: 0o755, codec: i % 2 ? XZ_BCJ : BZ2 };
    });
    files.push({
      name: 'notes.txt',
      data: new TextEncoder().encode('passthrough\n'),
      flags: 0o644,
      codec: XZ_BCJ,
    });
    await buildMar(input, files);
    const pipeline = await Pipeline.create({ config, threads: 2, cache: newCache(join(dir, 'cache')) });
    try {
      const out = join(dir, 'out.mar');
      const m = await pipeline.signLocale({ profile: 'dev', input, output: out });
      // Every PE was produced here; the corpus' signed EFI files share their image (and so their new
      // signature) with their unsigned twins, so some are `shared`.
      assert.equal(m.totals.signed + m.totals.shared, files.length - 1);
      assert.equal(m.totals.cached, 0);
      const signed = files.slice(0, -1).map((f) => f.name);
      await checkSignedOutput(input, out, { signed, dir });
      const again = join(dir, 'again.mar');
      const m2 = await pipeline.signLocale({ profile: 'dev', input, output: again });
      assert.equal(m2.totals.signOperations, 0);
      assert.ok(readFileSync(again).equals(readFileSync(out)));
      const { info } = await readAll(out);
      assert.equal(info.productInfo?.channel, 'test-channel');
    } finally {
      await pipeline.close();
    }
  },
);
