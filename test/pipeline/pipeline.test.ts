import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { Pipeline } from '../../src/pipeline/index.js';
import { loadReleaseRequest, resolveRequest } from '../../src/release/request.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import type { Coordinator } from '../../src/pipeline/types.js';
import { tempDir } from '../helpers/env.js';
import { buildMar, BZ2, checkSignedOutput, CONFIG_PATH, fixtureMar, newCache, RELEASE } from './_support.js';

let config: LoadedConfig;
let pipeline: Pipeline;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
  pipeline = await Pipeline.create({ config, threads: 1, cache: null });
});
after(() => pipeline.close());

test('canary signs and verifies a synthetic PE through the pool; a bad profile reports a typed error', async () => {
  const ok = await pipeline.canary('dev');
  assert.equal(ok.ok, true, JSON.stringify(ok.error));
  assert.ok(ok.ms >= 0);
  const bad = await pipeline.canary('nope');
  assert.equal(bad.ok, false);
  assert.equal(bad.error?.name, 'ConfigError');
});

test('options are validated up front', async () => {
  for (const threads of [0, -1, 1.5, 1000])
    await assert.rejects(
      Pipeline.create({ config, threads, cache: null }),
      (e: Error & { code?: string }) => e.name === 'UsageError' && e.code === 'BAD_THREADS',
      String(threads),
    );
  await assert.rejects(
    Pipeline.create({} as never),
    (e: Error & { code?: string }) => e.code === 'CONFIG_MISSING',
  );
});

test('an aborted signLocale rejects and leaves no output or temp file', async () => {
  const dir = tempDir();
  const ac = new AbortController();
  ac.abort(new Error('stop'));
  const out = join(dir, 'x.mar');
  await assert.rejects(
    pipeline.signLocale({ profile: 'dev', input: fixtureMar('de'), output: out, signal: ac.signal }),
  );
  assert.deepEqual(readdirSync(dir), []);
});

test('a dry run and a fully warm run never start the pool threads', async () => {
  const dir = tempDir();
  const cache = newCache(join(dir, 'c'));
  const cold = await Pipeline.create({ config, threads: 1, cache });
  try {
    await cold.signLocale({ profile: 'dev', input: fixtureMar('de'), output: join(dir, 'x'), dryRun: true });
    assert.equal(cold.pool.started, false);
    await cold.signLocale({ profile: 'dev', input: fixtureMar('de'), output: join(dir, 'a.mar') });
    assert.equal(cold.pool.started, true);
  } finally {
    await cold.close();
  }
  const warm = await Pipeline.create({ config, threads: 1, cache });
  try {
    await warm.signLocale({ profile: 'dev', input: fixtureMar('de'), output: join(dir, 'b.mar') });
    assert.equal(warm.pool.started, false);
  } finally {
    await warm.close();
  }
});

test('output equal to input is refused', async () => {
  await assert.rejects(
    pipeline.signLocale({ profile: 'dev', input: fixtureMar('de'), output: fixtureMar('de') }),
    (e: Error & { code?: string }) => e.code === 'OUTPUT_IS_INPUT',
  );
});

test('stats() counts signing operations and cache traffic', async () => {
  const dir = tempDir();
  const p = await Pipeline.create({ config, threads: 1, cache: newCache(join(dir, 'c')) });
  try {
    await p.signLocale({ profile: 'dev', input: fixtureMar('ja'), output: join(dir, 'a.mar') });
    await p.signLocale({ profile: 'dev', input: fixtureMar('ja'), output: join(dir, 'b.mar') });
    const s = p.stats();
    assert.equal(s.threads, 1);
    assert.equal(s.signOperations, 4);
    assert.equal(s.cache.misses, 4);
    assert.equal(s.cache.hits, 4);
    assert.ok(s.cache.bytesServed > 0);
    assert.equal(s.cache.corrupt, 0);
  } finally {
    await p.close();
  }
});

test('release requests: a directory is its release.json, else its containers named by folder or file', async () => {
  const fromJson = await loadReleaseRequest(RELEASE);
  assert.equal(fromJson.request.release, 'sample-140.0', "the directory's release.json names the release");
  assert.equal(fromJson.source, join(RELEASE, 'release.json'));
  assert.deepEqual(
    resolveRequest(fromJson.request, fromJson.base, '/o', '.').map((l) => [l.locale, l.output]),
    [
      ['en-US', '/o/en-US/complete.mar'],
      ['de', '/o/de/complete.mar'],
      ['fr', '/o/fr/complete.mar'],
      ['ja', '/o/ja/complete.mar'],
      ['win64', '/o/win64/target.zip'],
    ],
  );
  const dir = tempDir();
  const scan = async (): Promise<string[][]> => {
    const { request, base } = await loadReleaseRequest(dir, { excludeDir: join(dir, 'out') });
    return resolveRequest(request, base, '/o', '.').map((l) => [l.locale, l.output]);
  };
  writeFileSync(join(dir, 'it.mar'), '');
  mkdirSync(join(dir, 'pt-BR'));
  writeFileSync(join(dir, 'pt-BR', 'complete.mar'), '');
  mkdirSync(join(dir, 'win'));
  writeFileSync(join(dir, 'win', 'target.zip'), '');
  writeFileSync(join(dir, 'notes.txt'), '');
  assert.deepEqual(await scan(), [
    ['it', '/o/it.mar'],
    ['pt-BR', '/o/pt-BR/complete.mar'],
    ['win', '/o/win/target.zip'],
  ]);
  mkdirSync(join(dir, 'out', 'de'), { recursive: true });
  writeFileSync(join(dir, 'out', 'de', 'complete.mar'), '');
  assert.equal((await scan()).length, 3, 'the output directory is not scanned');
  // Two containers in one folder are named by their paths.
  writeFileSync(join(dir, 'pt-BR', 'target.zip'), '');
  assert.deepEqual(
    (await scan()).map((x) => x[0]),
    ['it', 'pt-BR/complete', 'pt-BR/target', 'win'],
  );
  writeFileSync(join(dir, 'it.zip'), '');
  await assert.rejects(
    scan(),
    (e: Error & { code?: string }) => e.code === 'RELEASE_SCHEMA' && /"it"/.test(e.message),
  );
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  await assert.rejects(
    loadReleaseRequest(empty),
    (e: Error & { code?: string }) => e.code === 'RELEASE_EMPTY',
  );
  await assert.rejects(
    loadReleaseRequest(join(dir, 'missing')),
    (e: Error & { code?: string }) => e.code === 'RELEASE_NOT_FOUND',
  );
  for (const [body, code] of [
    ['{', 'RELEASE_SCHEMA'],
    ['[]', 'RELEASE_SCHEMA'],
    ['{"release":"r","locales":{}}', 'RELEASE_SCHEMA'],
    ['{"release":"r","locales":{"de":5}}', 'RELEASE_SCHEMA'],
    ['{"release":"r","locales":{"a@b":"x.mar"}}', 'RELEASE_SCHEMA'],
    ['{"locales":{"de":"x.mar"}}', 'RELEASE_SCHEMA'],
    ['{"release":"r","locales":{"de":"../x.mar"}}', 'RELEASE_PATH_TRAVERSAL'],
  ] as const) {
    const f = join(dir, 'r.json');
    writeFileSync(f, body);
    await assert.rejects(loadReleaseRequest(f), (e: Error & { code?: string }) => e.code === code, body);
  }
  assert.equal(existsSync(join(dir, 'r.json')), true);
});

test('in-flight entries are bounded by the reorder window; entries are written in order while others sign', async () => {
  const dir = tempDir();
  const input = join(dir, 'many.mar');
  const names = Array.from({ length: 20 }, (_, i) => `bin/m${String(i).padStart(2, '0')}.dll`);
  await buildMar(
    input,
    names.map((name, i) => ({
      name,
      data: buildPe({ arch: 'x86', kind: 'dll', name: String(i) }),
      codec: BZ2,
    })),
  );
  let active = 0;
  let maxActive = 0;
  const counting: Coordinator = {
    local: false,
    async once(_key, _lookup, work) {
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        return await work();
      } finally {
        active--;
      }
    },
  };
  const done: number[] = [];
  const out = join(dir, 'out.mar');
  const m = await pipeline.signLocale({
    profile: 'dev',
    input,
    output: out,
    coordinator: counting,
    // Reports also come at stage changes and while entries are signed: keep each new count once.
    onProgress: (p) => {
      if (p.entriesDone > (done.at(-1) ?? 0)) done.push(p.entriesDone);
    },
  });
  assert.equal(m.totals.signOperations, 20);
  assert.ok(maxActive > 1, `entries overlap (max ${maxActive})`);
  assert.ok(maxActive <= pipeline.pool.threads + 4, `at most threads + 4 in flight (max ${maxActive})`);
  assert.deepEqual(
    done,
    Array.from({ length: 20 }, (_, i) => i + 1),
    'progress in entry order',
  );
  await checkSignedOutput(input, out, { signed: names, dir, osslsigncodeLimit: 2 });
});

test('aborting mid-run rejects, settles in-flight work and leaves no output', async () => {
  const dir = tempDir();
  const ac = new AbortController();
  const out = join(dir, 'x.mar');
  await assert.rejects(
    pipeline.signLocale({
      profile: 'dev',
      input: fixtureMar('fr'),
      output: out,
      signal: ac.signal,
      onProgress: (p) => {
        if (p.entriesDone === 2) ac.abort(new Error('stop'));
      },
    }),
  );
  assert.deepEqual(readdirSync(dir), []);
  const again = await pipeline.signLocale({ profile: 'dev', input: fixtureMar('fr'), output: out });
  assert.equal(again.totals.entries, 8, 'the pipeline is still usable');
});

test('signRelease: a failing locale is recorded with its typed error; the others are signed and summed', async () => {
  const { copyFileSync, readFileSync } = await import('node:fs');
  const { signRelease } = await import('../../src/pipeline/index.js');
  const dir = tempDir();
  const rel = join(dir, 'rel');
  mkdirSync(join(rel, 'de'), { recursive: true });
  copyFileSync(fixtureMar('de'), join(rel, 'de', 'complete.mar'));
  writeFileSync(join(rel, 'zz.mar'), 'not a MAR at all');
  const out = join(dir, 'out');
  const { request, base, source } = await loadReleaseRequest(rel);
  const locales = resolveRequest(request, base, out, '.');
  const m = await signRelease({
    signer: pipeline,
    release: request.release,
    source,
    locales,
    outDir: out,
    profile: 'dev',
  });
  assert.equal(m.totals.locales, 2);
  assert.equal(m.totals.failed, 1);
  const bad = m.locales.find((l) => l.locale === 'zz')!;
  assert.equal(bad.ok, false);
  assert.equal(bad.error?.name, 'FormatError');
  assert.equal(bad.error?.code, 'ARCHIVE_UNKNOWN_FORMAT');
  assert.equal(m.totals.entries, 8);
  assert.equal(m.totals.signOperations, 4);
  const sums = readFileSync(join(out, 'SHA512SUMS'), 'utf8');
  assert.match(sums, /^[0-9a-f]{128} {2}de\/complete\.mar\n$/);
  assert.equal(existsSync(join(out, 'zz.mar')), false);
  await checkSignedOutput(fixtureMar('de'), join(out, 'de', 'complete.mar'), {
    signed: ['firefox.exe', 'xul.dll', 'updater.exe', 'uninstall/helper.exe'],
    dir,
  });
});

test('a cache that cannot store entries does not fail the locale; the manifest warns', async () => {
  const dir = tempDir();
  const real = newCache(join(dir, 'c'));
  const readOnly = Object.assign(Object.create(real) as typeof real, {
    put: async () => {
      throw Object.assign(new Error('read-only file system'), { code: 'EROFS' });
    },
  });
  const p = await Pipeline.create({ config, threads: 1, cache: readOnly });
  try {
    const out = join(dir, 'x.mar');
    const m = await p.signLocale({ profile: 'dev', input: fixtureMar('ja'), output: out });
    assert.equal(m.totals.misses, 4);
    assert.equal(m.warnings?.length, 4);
    assert.match(m.warnings![0]!, /cache put failed for firefox\.exe: EROFS/);
    await checkSignedOutput(fixtureMar('ja'), out, {
      signed: ['firefox.exe', 'xul.dll', 'updater.exe', 'uninstall/helper.exe'],
      dir,
    });
  } finally {
    await p.close();
  }
});

test('a MAR-only profile passes every entry through; an Authenticode-only profile writes an unsigned MAR', async () => {
  const { readAll, KEYS } = await import('./_support.js');
  const dir = tempDir();
  const authenticode = {
    certChain: join(KEYS, 'codesign.chain.pem'),
    key: join(KEYS, 'codesign.key.pem'),
    digest: 'sha256',
  };
  const mar = { keys: [join(KEYS, 'mar.key.pem')], algorithm: 'sha384' };
  writeFileSync(
    join(dir, 'marsign.config.json'),
    JSON.stringify({ profiles: { maronly: { mar }, pe: { authenticode } } }),
  );
  const p = await Pipeline.create({
    config: await loadConfig(join(dir, 'marsign.config.json')),
    threads: 1,
    cache: null,
  });
  try {
    const a = join(dir, 'a.mar');
    const unchecked = await p.signLocale({
      profile: 'maronly',
      input: fixtureMar('de'),
      output: a,
      verifyPassthrough: false,
    });
    assert.equal(unchecked.totals.passthrough, 8);
    assert.equal(p.pool.started, false, 'nothing to sign or check: no thread started');
    const ma = await p.signLocale({ profile: 'maronly', input: fixtureMar('de'), output: a });
    assert.equal(ma.totals.passthrough, 8);
    await checkSignedOutput(fixtureMar('de'), a, { signed: [], dir });
    // Checking the passthrough entries is CPU work for the pool (no keys are loaded for it).
    assert.equal(ma.passthroughVerified, true);
    assert.equal(ma.totals.passthroughDecoded, 8);
    assert.equal(p.pool.checks, 8);

    const b = join(dir, 'b.mar');
    const mb = await p.signLocale({ profile: 'pe', input: fixtureMar('de'), output: b });
    assert.equal(mb.totals.misses, 4);
    assert.equal((await readAll(b)).info.signatures.length, 0);
  } finally {
    await p.close();
  }
});
