/**
 * The locale-output tier end to end: a re-run of the same input is served whole from the cache
 * (byte-identical, no signature, verified), the stored payload is a hard link to the output file (a copy
 * across filesystems), tampered outputs are misses that get repaired, and every input of the output key
 * (profile, MAR key, policy, --skip-invalid, --no-verify-passthrough, the input bytes) turns a hit into a miss.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import type { FsCacheStore } from '../../cache/fs-store.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { readMar } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import type { OutputSink } from '../../cache/types.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import { loadReleaseRequest, resolveRequest } from '../../src/release/request.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { tempDir } from '../helpers/env.js';
import {
  checkSignedOutput,
  FIXTURE_SIGNED,
  fixtureMar,
  KEYS,
  LOCALES,
  RELEASE_CONTAINERS,
  releaseOutput,
  newCache,
  readAll,
  RELEASE,
} from './_support.js';

let config: LoadedConfig;
let offConfig: LoadedConfig;
const configDir = tempDir();

before(async () => {
  // Profiles that differ from `dev` in one thing each that changes the output.
  const dir = configDir;
  const authenticode = {
    certChain: join(KEYS, 'codesign.chain.pem'),
    key: join(KEYS, 'codesign.key.pem'),
    digest: 'sha256',
    programName: 'marsign TEST-ONLY',
    programUrl: 'https://example.invalid/marsign-test-only',
  };
  const mar = { keys: [join(KEYS, 'mar.key.pem')], algorithm: 'sha384' };
  const profiles = {
    dev: { authenticode, mar },
    renamed: { authenticode: { ...authenticode, programName: 'another program' }, mar },
    otherMarKey: { authenticode, mar: { ...mar, keys: [join(KEYS, 'tsa.key.pem')] } },
    excludeXul: { authenticode, mar, policy: { exclude: ['xul.dll'] } },
  };
  writeFileSync(join(dir, 'marsign.config.json'), JSON.stringify({ profiles }));
  config = await loadConfig(join(dir, 'marsign.config.json'));
  writeFileSync(
    join(dir, 'off.config.json'),
    JSON.stringify({ cache: { outputs: false }, profiles: { dev: profiles.dev } }),
  );
  offConfig = await loadConfig(join(dir, 'off.config.json'));
});

function outputFiles(root: string): string[] {
  const out: string[] = [];
  if (!existsSync(root)) return out;
  for (const d of readdirSync(root).sort())
    if (/^[0-9a-f]{2}$/.test(d))
      for (const f of readdirSync(join(root, d)).sort())
        if (/^[0-9a-f]{64}\.out$/.test(f)) out.push(join(root, d, f));
  return out;
}

/** The payload file (`<key>.mar`) beside a stored output's `<key>.out`. */
const payloadOf = (out: string): string => out.replace(/\.out$/, '.mar');

async function sign(
  cache: FsCacheStore,
  input: string,
  output: string,
  more: {
    profile?: string;
    skipInvalid?: boolean;
    outputCache?: boolean;
    verifyPassthrough?: boolean;
    cfg?: LoadedConfig;
  } = {},
): Promise<{ m: LocaleManifest; p: Pipeline }> {
  const p = await Pipeline.create({ config: more.cfg ?? config, threads: 2, cache });
  try {
    const m = await p.signLocale({
      profile: more.profile ?? 'dev',
      input,
      output,
      ...(more.skipInvalid ? { skipInvalid: true } : {}),
      ...(more.outputCache !== undefined ? { outputCache: more.outputCache } : {}),
      ...(more.verifyPassthrough !== undefined ? { verifyPassthrough: more.verifyPassthrough } : {}),
    });
    return { m, p };
  } finally {
    await p.close();
  }
}

const sum = (tool: string, file: string): string =>
  spawnSync(tool, [file], { encoding: 'utf8' }).stdout.split(' ')[0]!;

test('a re-run is served whole: byte-identical, no signature, signable entries cached, true digests, no threads', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 3);
  const first = join(dir, 'first.mar');
  const a = await sign(newCache(root, secret), fixtureMar('de'), first);
  assert.equal(a.m.outputCache, 'miss');
  assert.equal(a.m.totals.signOperations, 4);
  assert.equal(outputFiles(root).length, 1, 'the output was stored');

  const second = join(dir, 'second.mar');
  const b = await sign(newCache(root, secret), fixtureMar('de'), second);
  assert.equal(b.m.outputCache, 'hit');
  assert.equal(b.p.pool.started, false, 'no pool thread started');
  assert.ok(readFileSync(second).equals(readFileSync(first)), 'byte-identical to the first run');
  assert.equal(b.m.totals.signOperations, 0);
  assert.equal(b.m.totals.misses, 0);
  assert.equal(b.m.totals.hits, 4);
  assert.equal(b.m.totals.passthrough, 4);
  assert.equal(b.m.totals.inputBytes, statSync(fixtureMar('de')).size);
  assert.equal(b.m.totals.outputBytes, statSync(second).size);
  assert.deepEqual(
    b.m.entries.map(({ ms: _ms, action, check: _c, ...r }) => ({ ...r, signable: action !== 'passthrough' })),
    a.m.entries.map(({ ms: _ms, action, check: _c, ...r }) => ({ ...r, signable: action !== 'passthrough' })),
    'the same records; only the actions (and how passthrough entries were found intact) differ',
  );
  for (const e of b.m.entries)
    assert.equal(e.action, FIXTURE_SIGNED.includes(e.name) ? 'cached' : 'passthrough', e.name);
  // Digests: the verified sha256 and the stored sha512 are the file's (independent tools).
  assert.equal(b.m.output_sha256, sum('sha256sum', second));
  assert.equal(b.m.output_sha512, sum('sha512sum', second));
  assert.equal(b.m.outputSize, statSync(second).size);
  const onDisk = JSON.parse(readFileSync(`${second}.manifest.json`, 'utf8')) as LocaleManifest;
  assert.equal(onDisk.outputCache, 'hit');
  assert.deepEqual(onDisk.totals, b.m.totals);
  assert.deepEqual(b.p.stats().cache.outputHits, 1);
  assert.deepEqual(b.p.stats().cache.hits, 4);
  await checkSignedOutput(fixtureMar('de'), second, { signed: FIXTURE_SIGNED, dir });
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.tmp')),
    [],
    'no temp file left beside the output',
  );
});

test('a tampered output (flipped byte, truncation, wrong HMAC secret) is a miss, repaired, output still valid', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 4);
  const clean = join(dir, 'clean.mar');
  await sign(newCache(root, secret), fixtureMar('en-US'), clean);
  const cleanBytes = readFileSync(clean);
  const [stored] = outputFiles(root) as [string];
  const payload = payloadOf(stored);

  // The payload is a hard link to the last run's output: these edits change that output too, as
  // another program editing the output file in place would.
  const tampers: [string, () => void, Buffer][] = [
    [
      'flipped byte',
      () => {
        const b = readFileSync(payload);
        b[b.length - 100]! ^= 0x01; // inside the MAR index, near the end
        writeFileSync(payload, b);
      },
      secret,
    ],
    ['truncated', () => writeFileSync(payload, readFileSync(payload).subarray(0, 4096)), secret],
    [
      'flipped meta byte',
      () => {
        const b = readFileSync(stored);
        b[b.length - 10]! ^= 0x01;
        writeFileSync(stored, b);
      },
      secret,
    ],
    ['payload removed', () => unlinkSync(payload), secret],
    ['wrong HMAC secret', () => undefined, Buffer.alloc(32, 5)],
  ];
  for (const [what, tamper, s] of tampers) {
    tamper();
    const out = join(dir, `${what.replace(/ /g, '-')}.mar`);
    const cache = newCache(root, s);
    const r = await sign(cache, fixtureMar('en-US'), out);
    assert.equal(r.m.outputCache, 'miss', what);
    assert.ok(readFileSync(out).equals(cleanBytes), `${what}: byte-identical to the clean run`);
    await checkSignedOutput(fixtureMar('en-US'), out, { signed: FIXTURE_SIGNED, dir });
    if (what !== 'wrong HMAC secret') {
      assert.equal((await cache.stats()).outputs?.corrupt, 1, `${what}: counted as corrupt`);
      assert.equal(r.p.stats().cache.corrupt, 1, `${what}: the pipeline's corrupt counter`);
    }
    // Repaired: the stored output verifies again and serves the next run.
    assert.deepEqual((await cache.verify()).bad, [], what);
    assert.equal(statSync(payload).ino, statSync(out).ino, `${what}: stored again, linked to the new output`);
    const again = await sign(newCache(root, s), fixtureMar('en-US'), join(dir, 'again.mar'));
    assert.equal(again.m.outputCache, 'hit', `${what}: repaired`);
  }
});

test('the stored payload is a hard link to the output: served after the output is deleted, a miss once it is edited in place', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 9);
  const out = join(dir, 'de.mar');
  const a = await sign(newCache(root, secret), fixtureMar('de'), out);
  assert.equal(a.m.outputCache, 'miss');
  const [stored] = outputFiles(root) as [string];
  const o = statSync(out);
  assert.equal(statSync(payloadOf(stored)).ino, o.ino, 'the same inode');
  assert.equal(o.nlink, 2, 'the output and the cache payload');
  assert.equal(statSync(stored).size < 64 * 1024, true, 'the .out holds header and meta only');
  const bytes = readFileSync(out);

  // The output deleted: the link keeps the data, the next run is served.
  unlinkSync(out);
  const b = await sign(newCache(root, secret), fixtureMar('de'), out);
  assert.equal(b.m.outputCache, 'hit');
  assert.ok(readFileSync(out).equals(bytes));
  assert.equal(statSync(out).nlink, 1, 'a served output is a copy of its own');

  // Edited in place through the link (same inode, same size): a miss, removed, re-signed, stored again.
  const fd = openSync(payloadOf(stored), 'r+');
  writeSync(fd, Buffer.from('XX'), 0, 2, 4096);
  closeSync(fd);
  const cache = newCache(root, secret);
  const third = join(dir, 'de-3.mar');
  const c = await sign(cache, fixtureMar('de'), third);
  assert.equal(c.m.outputCache, 'miss');
  assert.equal((await cache.stats()).outputs?.corrupt, 1);
  assert.ok(readFileSync(third).equals(bytes), 'byte-identical after the repair');
  assert.equal(
    statSync(payloadOf(stored)).ino,
    statSync(third).ino,
    'stored again, linked to the new output',
  );
  await checkSignedOutput(fixtureMar('de'), third, { signed: FIXTURE_SIGNED, dir });
});

test('an output on another filesystem than the cache is stored as a copy and served', async (t) => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  if (!existsSync('/dev/shm') || statSync('/dev/shm').dev === statSync(dir).dev) {
    t.skip('no /dev/shm on another device than the temp directory');
    return;
  }
  const shm = mkdtempSync('/dev/shm/marsign-outlink-');
  try {
    const secret = Buffer.alloc(32, 10);
    const out = join(shm, 'fr.mar');
    const a = await sign(newCache(root, secret), fixtureMar('fr'), out);
    assert.equal(a.m.outputCache, 'miss');
    assert.equal(a.m.warnings, undefined, 'the EXDEV fallback is silent');
    const [stored] = outputFiles(root) as [string];
    assert.equal(statSync(out).nlink, 1);
    assert.equal(statSync(payloadOf(stored)).nlink, 1, 'a copy');
    assert.ok(readFileSync(payloadOf(stored)).equals(readFileSync(out)));
    const b = await sign(newCache(root, secret), fixtureMar('fr'), join(dir, 'fr.mar'));
    assert.equal(b.m.outputCache, 'hit');
    assert.ok(readFileSync(join(dir, 'fr.mar')).equals(readFileSync(out)));
  } finally {
    rmSync(shm, { recursive: true, force: true });
  }
});

test('another profile, MAR key, policy, --skip-invalid, --no-verify-passthrough or input bytes is a miss; the same bytes elsewhere a hit', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const cache = (): FsCacheStore => newCache(root, Buffer.alloc(32, 6));
  const input = join(dir, 'in.mar');
  copyFileSync(fixtureMar('de'), input);
  const base = await sign(cache(), input, join(dir, 'base.mar'));
  assert.equal(base.m.outputCache, 'miss');

  const elsewhere = join(dir, 'copy.mar');
  copyFileSync(input, elsewhere);
  assert.equal((await sign(cache(), elsewhere, join(dir, 'copy-out.mar'))).m.outputCache, 'hit');

  const renamed = await sign(cache(), input, join(dir, 'renamed.mar'), { profile: 'renamed' });
  assert.equal(renamed.m.outputCache, 'miss', 'authenticode signer options');
  assert.equal(renamed.m.totals.signOperations, 4);

  const otherKey = join(dir, 'other-key.mar');
  const ok = await sign(cache(), input, otherKey, { profile: 'otherMarKey' });
  assert.equal(ok.m.outputCache, 'miss', 'MAR signing key');
  const v = await verifyMar(otherKey, [join(KEYS, 'tsa.cert.pem')]);
  assert.ok(v.valid, v.problems.join('; '));

  const excl = await sign(cache(), input, join(dir, 'excl.mar'), { profile: 'excludeXul' });
  assert.equal(excl.m.outputCache, 'miss', 'policy');
  assert.equal(excl.m.entries.find((e) => e.name === 'xul.dll')!.action, 'passthrough');

  const skip = await sign(cache(), input, join(dir, 'skip.mar'), { skipInvalid: true });
  assert.equal(skip.m.outputCache, 'miss', '--skip-invalid');
  assert.equal(skip.m.totals.signOperations, 0, 'entries are still cached');

  const unchecked = await sign(cache(), input, join(dir, 'unchecked.mar'), { verifyPassthrough: false });
  assert.equal(unchecked.m.outputCache, 'miss', '--no-verify-passthrough');

  // Flip one byte of a passthrough entry: refused when checked; signed (another input: a miss) unchecked.
  const src = await FileSource.open(input);
  const entry = (await readMar(src)).entries.find((e) => e.name === 'locale.ini')!;
  await src.close();
  const bytes = readFileSync(input);
  bytes[entry.offset + Math.floor(entry.size / 2)]! ^= 0x01;
  writeFileSync(input, bytes);
  const changed = join(dir, 'changed.mar');
  await assert.rejects(sign(cache(), input, changed), { code: 'CODEC_CORRUPT' });
  const c = await sign(cache(), input, changed, { verifyPassthrough: false });
  assert.equal(c.m.outputCache, 'miss', 'input bytes');
  assert.equal(c.m.totals.signOperations, 0);
  assert.equal(c.m.totals.hits, 4);
  const [x, y] = [await readAll(changed), await readAll(join(dir, 'base.mar'))];
  for (const e of x.info.entries)
    assert.equal(x.raw.get(e.name)!.equals(y.raw.get(e.name)!), e.name !== 'locale.ini', e.name);
  assert.equal(outputFiles(root).length, 7, 'one stored output per distinct key');
});

test('the tier is off with outputCache: false, config cache.outputs: false, and in a dry run', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const cache = (): FsCacheStore => newCache(root, Buffer.alloc(32, 7));
  const off = await sign(cache(), fixtureMar('ja'), join(dir, 'a.mar'), { outputCache: false });
  assert.equal(off.m.outputCache, undefined);
  assert.equal(outputFiles(root).length, 0, 'nothing stored');
  const fromConfig = await sign(cache(), fixtureMar('ja'), join(dir, 'b.mar'), { cfg: offConfig });
  assert.equal(fromConfig.m.outputCache, undefined);
  assert.equal(outputFiles(root).length, 0);
  // A per-call true wins over the config.
  const on = await sign(cache(), fixtureMar('ja'), join(dir, 'c.mar'), { cfg: offConfig, outputCache: true });
  assert.equal(on.m.outputCache, 'miss');
  assert.equal(outputFiles(root).length, 1);
  const [stored] = outputFiles(root) as [string];
  const mtime = statSync(stored).mtimeMs;

  const p = await Pipeline.create({ config, threads: 1, cache: cache() });
  try {
    const dry = await p.signLocale({
      profile: 'dev',
      input: fixtureMar('ja'),
      output: join(dir, 'd.mar'),
      dryRun: true,
    });
    assert.equal(dry.outputCache, undefined);
    assert.equal(p.stats().cache.outputHits + p.stats().cache.outputMisses, 0, 'never looked up');
    assert.equal(existsSync(join(dir, 'd.mar')), false);
  } finally {
    await p.close();
  }
  const p2 = await Pipeline.create({ config, threads: 1, cache: cache(), outputCache: false });
  try {
    const m = await p2.signLocale({ profile: 'dev', input: fixtureMar('ja'), output: join(dir, 'e.mar') });
    assert.equal(m.outputCache, undefined, 'Pipeline option');
    assert.equal(m.totals.hits, 4);
  } finally {
    await p2.close();
  }
  assert.equal(statSync(stored).mtimeMs, mtime, 'the stored output was neither rewritten nor touched');
});

test('config cache.outputs must be a boolean', async () => {
  const dir = tempDir();
  const file = join(dir, 'bad.config.json');
  writeFileSync(file, JSON.stringify({ cache: { outputs: 'yes' }, profiles: {} }));
  await assert.rejects(loadConfig(file), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'CONFIG_INVALID');
    assert.match(e.message, /cache\.outputs/);
    return true;
  });
});

test('a failed output store is a warning in the manifest, never a failed locale', async () => {
  const dir = tempDir();
  const real = newCache(join(dir, 'cache'));
  // A wrapping store declares its capabilities: here the real ones, but an output tier whose put fails.
  const broken = Object.assign(Object.create(real) as FsCacheStore, {
    outputs: {
      hasOutput: (k: string) => real.hasOutput(k),
      getOutput: (k: string, sink: OutputSink) => real.getOutput(k, sink),
      putOutput: async () => {
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      },
    },
  });
  const p = await Pipeline.create({ config, threads: 2, cache: broken });
  try {
    const out = join(dir, 'x.mar');
    const m = await p.signLocale({ profile: 'dev', input: fixtureMar('fr'), output: out });
    assert.equal(m.outputCache, 'miss');
    assert.deepEqual(m.warnings, ['output cache put failed: ENOSPC: no space left on device']);
    const onDisk = JSON.parse(readFileSync(`${out}.manifest.json`, 'utf8')) as LocaleManifest;
    assert.deepEqual(onDisk.warnings, m.warnings);
    await checkSignedOutput(fixtureMar('fr'), out, { signed: FIXTURE_SIGNED, dir });
  } finally {
    await p.close();
  }
});

test('sign-release: a re-run serves every locale whole without planning; a lost output is planned alone', async () => {
  const dir = tempDir();
  const root = join(dir, 'cache');
  const secret = Buffer.alloc(32, 8);
  const { request, base, source } = await loadReleaseRequest(RELEASE, { excludeDir: dir });
  const run = async (out: string) => {
    const p = await Pipeline.create({ config, threads: 2, cache: newCache(root, secret) });
    try {
      const outDir = join(dir, out);
      const locales = resolveRequest(request, base, outDir, '.');
      const m = await signRelease({
        signer: p,
        release: request.release,
        source,
        locales,
        outDir,
        profile: 'dev',
      });
      return { m, started: p.pool.started };
    } finally {
      await p.close();
    }
  };
  const cold = await run('cold');
  assert.equal(cold.m.totals.failed, 0);
  assert.equal(cold.m.totals.outputHits, 0);
  assert.deepEqual(
    cold.m.locales.map((l) => l.outputCache),
    RELEASE_CONTAINERS.map(() => 'miss'),
  );
  assert.equal(outputFiles(root).length, RELEASE_CONTAINERS.length);
  // Every locale's payload is a hard link to its output of this run.
  for (const l of RELEASE_CONTAINERS) assert.equal(statSync(releaseOutput(join(dir, 'cold'), l)).nlink, 2, l);

  const warm = await run('warm');
  assert.equal(warm.started, false, 'nothing planned, nothing signed');
  assert.equal(warm.m.totals.outputHits, RELEASE_CONTAINERS.length);
  assert.equal(warm.m.totals.signOperations, 0);
  assert.equal(warm.m.totals.hits, RELEASE_CONTAINERS.length * FIXTURE_SIGNED.length);
  for (const l of RELEASE_CONTAINERS)
    assert.ok(
      readFileSync(releaseOutput(join(dir, 'warm'), l)).equals(
        readFileSync(releaseOutput(join(dir, 'cold'), l)),
      ),
      l,
    );
  const sums = spawnSync('sha512sum', ['-c', 'SHA512SUMS'], { cwd: join(dir, 'warm'), encoding: 'utf8' });
  assert.equal(sums.status, 0, sums.stdout + sums.stderr);

  // Lose one locale's output: that locale alone is planned and assembled from the entry cache.
  const lost = outputFiles(root)[0]!;
  rmSync(lost);
  rmSync(payloadOf(lost));
  const third = await run('third');
  assert.equal(third.m.totals.outputHits, RELEASE_CONTAINERS.length - 1);
  const missed = third.m.locales.filter((l) => l.outputCache === 'miss');
  assert.equal(missed.length, 1);
  assert.equal(missed[0]!.totals?.hits, FIXTURE_SIGNED.length);
  assert.equal(third.m.totals.signOperations, 0);
  assert.equal(third.started, false);
  for (const l of LOCALES)
    await checkSignedOutput(fixtureMar(l), join(dir, 'third', l, 'complete.mar'), {
      signed: FIXTURE_SIGNED,
      dir,
    });
  assert.equal(existsSync(lost), true, 'stored again');
  assert.equal(existsSync(payloadOf(lost)), true);
});
