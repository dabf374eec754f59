import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { readMar } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { decompress, readSettings } from '../../src/codecs/index.js';
import { newCounters, RunLedger, type SigningContext } from '../../src/pipeline/context.js';
import { finishStats } from '../../src/pipeline/finish.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import { planRelease, type PlannedMiss } from '../../src/pipeline/plan.js';
import type { SignEntryTask } from '../../src/pipeline/protocol.js';
import { startScheduler } from '../../src/pipeline/schedule.js';
import { InProcessCoordinator } from '../../src/pipeline/single-flight.js';
import { loadReleaseRequest, resolveRequest } from '../../src/release/request.js';
import { tempDir } from '../helpers/env.js';
import {
  checkSignedOutput,
  CONFIG_PATH,
  FIXTURE_SIGNED,
  fixtureMar,
  LOCALES,
  newCache,
  RELEASE,
  RELEASE_CONTAINERS,
  ZIP_SIGNED,
} from './_support.js';

let config: LoadedConfig;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
});

/** Record every task submitted to a pipeline's pool (name and input size), then run it for real. */
function spyOnPool(p: Pipeline): { name: string; size: number }[] {
  const seen: { name: string; size: number }[] = [];
  const run = p.pool.run.bind(p.pool);
  p.pool.run = (task: SignEntryTask, signal?: AbortSignal) => {
    seen.push({ name: task.name, size: task.input.length });
    return run(task, signal);
  };
  return seen;
}

async function entriesOf(path: string) {
  const src = await FileSource.open(path);
  try {
    return (await readMar(src)).entries;
  } finally {
    await src.close();
  }
}

test('startScheduler releases misses largest first, never more than maxInFlight at once, and re-sorts on add', async () => {
  const entries = await entriesOf(fixtureMar('en-US'));
  const misses: PlannedMiss[] = entries.map((entry, i) => ({
    key: String(i).padStart(64, '0'),
    input: fixtureMar('en-US'),
    entry: { index: i, ...entry },
    codec: { codec: 'none' },
  }));
  const order: string[] = [];
  let inFlight = 0;
  let maxSeen = 0;
  const fakePool = {
    threads: 2,
    run: async (task: SignEntryTask) => {
      order.push(task.name);
      inFlight++;
      maxSeen = Math.max(maxSeen, inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
      task.claims?.close();
      return {
        ok: true as const,
        output: task.input,
        codecSettings: 'none',
        decoded: { size: 0, crc32: 0 },
        decodedSize: 0,
        outputSha256: '0'.repeat(64),
        madeSignature: true,
        timings: { decompressMs: 0, signMs: 0, verifyMs: 0, compressMs: 0 },
      };
    },
  };
  const ctx = {
    config,
    profile: { name: 'dev', fingerprint: 'f' },
    pool: fakePool,
    store: null,
    coordinator: new InProcessCoordinator(),
    counters: newCounters(),
  } as unknown as SigningContext;
  const ledger = new RunLedger();
  // Handed over in index order (smallest first is in there too): the scheduler sorts them.
  const first = misses.slice(0, 3);
  const rest = misses.slice(3);
  const h = startScheduler(ctx, ledger, first, { maxInFlight: 1 });
  h.add(rest);
  await h.done();
  const bySize = [...entries].sort((a, b) => b.size - a.size).map((e) => e.name);
  // The first three were handed over (and one released) before the rest arrived.
  const firstReleased = [...entries.slice(0, 3)].sort((a, b) => b.size - a.size)[0]!.name;
  assert.equal(order[0], firstReleased);
  assert.deepEqual(
    order.slice(1),
    bySize.filter((n) => n !== firstReleased),
  );
  assert.equal(maxSeen, 1);
  assert.equal(ctx.counters.signOperations, entries.length);
  assert.equal(ledger.signatures, entries.length);
  // Every key is attributed to the input it was planned for: its first use there is `signed`, any other `shared`.
  assert.equal(ledger.actionFor(misses[0]!.key, fixtureMar('en-US')).action, 'signed');
  assert.equal(ledger.actionFor(misses[0]!.key, fixtureMar('en-US')).action, 'shared');
  assert.equal(ledger.actionFor(misses[1]!.key, fixtureMar('de')).action, 'shared');
  assert.equal(ledger.actionFor('f'.repeat(64), fixtureMar('en-US')).action, 'cached');
});

test('planRelease: unique signable keys across locales, shared ones largest first then per locale, cached ones left out', async () => {
  const dir = tempDir();
  const cache = newCache(join(dir, 'c'));
  const p = await Pipeline.create({ config, threads: 1, cache });
  try {
    const { profile, policy } = await p.profile('dev');
    const ctx = {
      config,
      profile,
      policy,
      pool: p.pool,
      store: cache,
      coordinator: new InProcessCoordinator(),
      counters: newCounters(),
    } as unknown as SigningContext;
    const inputs = LOCALES.map(fixtureMar);
    const plan = await planRelease(ctx, inputs);
    // 3 shared PEs × 2 codecs + one helper.exe per locale.
    assert.equal(plan.misses.length, 3 * 2 + LOCALES.length);
    assert.equal(new Set(plan.misses.map((m) => m.key)).size, plan.misses.length);
    // Shared entries first, largest first; then each locale's own entries in locale order.
    const shared = plan.misses.filter((m) => (m.uses ?? 1) > 1);
    assert.equal(shared.length, 3 * 2);
    assert.deepEqual(plan.misses.slice(0, shared.length), shared);
    for (let i = 1; i < shared.length; i++) assert.ok(shared[i - 1]!.entry.size >= shared[i]!.entry.size);
    assert.deepEqual(
      plan.misses.slice(shared.length).map((m) => [m.inputIndex, m.entry.name]),
      inputs.map((_, i) => [i, 'uninstall/helper.exe']),
    );
    for (const input of inputs) assert.equal(plan.inputs.get(input)!.keys!.size, FIXTURE_SIGNED.length);
    // Each miss knows the codec its stored bytes are in (the task needs it; zip's cannot be sniffed).
    for (const m of plan.misses)
      assert.deepEqual(m.codec, readSettings((await entryBytes(m.input, m.entry.name))!));
    await cache.put(plan.misses[0]!.key, new Uint8Array([1, 2, 3]));
    const again = await planRelease(ctx, inputs);
    assert.equal(again.misses.length, plan.misses.length - 1);
    assert.ok(!again.misses.some((m) => m.key === plan.misses[0]!.key));
  } finally {
    await p.close();
  }
});

test('a cold locale submits its largest miss first; digests equal sha256sum/sha512sum; warm signable hash taken while writing equals the read-back one', async () => {
  const dir = tempDir();
  const p = await Pipeline.create({ config, threads: 1, cache: newCache(join(dir, 'c')) });
  try {
    const seen = spyOnPool(p);
    const out = join(dir, 'en.mar');
    const before = { ...finishStats };
    const m = await p.signLocale({ profile: 'dev', input: fixtureMar('en-US'), output: out });
    // Cold: entry sizes unknown before signing, so the signable stream is read back.
    assert.equal(finishStats.readBack, before.readBack + 1);
    const signable = (await entriesOf(fixtureMar('en-US'))).filter((e) => FIXTURE_SIGNED.includes(e.name));
    assert.deepEqual(
      seen.map((s) => s.name),
      [...signable].sort((a, b) => b.size - a.size).map((e) => e.name),
    );
    assert.equal(m.totals.signed, FIXTURE_SIGNED.length);
    assert.equal(m.totals.signOperations, FIXTURE_SIGNED.length);
    const sum = (tool: string) => spawnSync(tool, [out], { encoding: 'utf8' }).stdout.split(' ')[0];
    assert.equal(m.output_sha256, sum('sha256sum'));
    assert.equal(m.output_sha512, sum('sha512sum'));
    await checkSignedOutput(fixtureMar('en-US'), out, { signed: FIXTURE_SIGNED, dir });
    // Warm: every entry from the cache, byte-identical, record digests equal the signed bytes'.
    const warmOut = join(dir, 'en-warm.mar');
    // (The entry path: the locale-output tier would serve the whole output instead.)
    const w = await p.signLocale({
      profile: 'dev',
      input: fixtureMar('en-US'),
      output: warmOut,
      outputCache: false,
    });
    // Warm: assembled in memory, the signable hash taken there; byte-identical output (RSA PKCS#1 v1.5
    // is deterministic) proves it equals the read-back hash of the cold run.
    assert.equal(finishStats.assembled, before.assembled + 1);
    assert.equal(w.totals.cached, FIXTURE_SIGNED.length);
    assert.equal(w.totals.signOperations, 0);
    assert.deepEqual(readFileSync(warmOut), readFileSync(out));
    assert.deepEqual(
      w.entries.map((e) => e.outputSha256),
      m.entries.map((e) => e.outputSha256),
    );
  } finally {
    await p.close();
  }
});

test('a release signs its unique misses largest first across locales; each PE is signed once, whatever codec holds it', async () => {
  const dir = tempDir();
  const p = await Pipeline.create({ config, threads: 2, cache: newCache(join(dir, 'c')) });
  try {
    const seen = spyOnPool(p);
    const out = join(dir, 'out');
    const { request, base, source } = await loadReleaseRequest(RELEASE, { excludeDir: out });
    const locales = resolveRequest(request, base, out, '.');
    const rm = await signRelease({
      signer: p,
      release: request.release,
      source,
      locales,
      outDir: out,
      profile: 'dev',
    });
    assert.equal(rm.totals.failed, 0);
    // 3 PEs shared by every locale, stored with 2 codecs (bz2 and xz locales), a helper.exe per locale, and
    // the zip holding en-US's 4 PEs in deflate/stored entries: 14 distinct entries go to the pool, 7 distinct
    // PEs are signed (another codec or container applies the first one's signature), and every
    // container's actions add up to exactly that.
    const distinctEntries = 3 * 2 + LOCALES.length + ZIP_SIGNED.length;
    const distinctPes = 3 + LOCALES.length;
    assert.equal(seen.length, distinctEntries);
    assert.equal(rm.totals.signOperations, distinctPes);
    assert.equal(rm.totals.signed, distinctPes);
    assert.equal(
      rm.totals.shared + rm.totals.cached,
      RELEASE_CONTAINERS.length * FIXTURE_SIGNED.length - distinctPes,
    );
    assert.equal(rm.totals.cached, 0, 'a cold cache serves nothing from an earlier run');
    // Which locale's task signs a shared PE first is up to the pool; each locale signs at least its
    // own helper.exe, and the per-locale counts add up to the signatures made.
    assert.equal(
      rm.locales.reduce((n, l) => n + l.totals!.signed, 0),
      distinctPes,
    );
    for (const l of rm.locales.filter((x) => x.locale !== 'win64'))
      assert.ok(l.totals!.signed >= 1, `${l.locale} signed its helper.exe`);
    // The same PE signed once is byte-identical inside a bz2 and an xz locale.
    const signedPe = async (locale: string, name: string): Promise<Buffer> =>
      Buffer.from(await decompress((await entryBytes(join(out, locale, 'complete.mar'), name))!));
    const codecs = new Map<string, string>();
    for (const l of LOCALES)
      codecs.set(readSettings((await entryBytes(fixtureMar(l), FIXTURE_SIGNED[0]!))!).codec, l);
    assert.equal(codecs.size, 2, 'the fixture release holds both codecs');
    const [a, b] = [...codecs.values()];
    for (const name of FIXTURE_SIGNED.filter((n) => !n.includes('helper')))
      assert.deepEqual(await signedPe(a!, name), await signedPe(b!, name), name);
    // The first locale's misses are released while the others are still being planned: its biggest
    // goes first. (Two gates open at once with 2 threads; which of the two reads its bytes and reaches
    // the pool first is up to the I/O.)
    const firstLocale = (await entriesOf(locales[0]!.input)).filter((e) => FIXTURE_SIGNED.includes(e.name));
    const biggest = Math.max(...firstLocale.map((e) => e.size));
    assert.ok(
      seen.slice(0, 2).some((s) => s.size === biggest),
      `first submissions: ${JSON.stringify(seen.slice(0, 2))}`,
    );
    for (const l of LOCALES)
      await checkSignedOutput(fixtureMar(l), join(out, l, 'complete.mar'), { signed: FIXTURE_SIGNED, dir });
  } finally {
    await p.close();
  }
});

/** One entry's stored bytes from a MAR file. */
async function entryBytes(path: string, name: string): Promise<Uint8Array | undefined> {
  const src = await FileSource.open(path);
  try {
    const e = (await readMar(src)).entries.find((x) => x.name === name);
    return e && src.read(e.offset, e.size);
  } finally {
    await src.close();
  }
}
