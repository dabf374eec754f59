/**
 * The release plan and the locales overlap (src/pipeline/release.ts `PlanTracker`, plan.ts `planRelease`
 * `onPlanned`): a locale starts once its own input is planned, not after the whole plan; a failed plan
 * still fails the release. The plan takes each input's whole sha256 for the audit record (read whole into
 * a leased buffer; without room in the budget the locale takes it from the file), and the records carry it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { AuditSink, LocaleAuditRun } from '../../src/audit/types.js';
import { loadConfig } from '../../src/config/index.js';
import { RunLedger } from '../../src/pipeline/context.js';
import { Pipeline, signRelease, type LocaleManifest } from '../../src/pipeline/index.js';
import type { ReleasePlan } from '../../src/pipeline/plan.js';
import type { LocaleSigner } from '../../src/pipeline/release.js';
import type { ResolvedLocale } from '../../src/release/request.js';
import { tempDir } from '../helpers/env.js';
import { CONFIG_PATH, fixtureMar, LOCALES, newCache } from './_support.js';

const sha256File = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

function locales(dir: string): ResolvedLocale[] {
  return LOCALES.map((locale) => ({
    locale,
    input: fixtureMar(locale),
    outputDir: join(dir, 'out', locale),
    output: join(dir, 'out', locale, 'complete.mar'),
  }));
}

/** A manifest for a locale the fake signer "signed" (the release report reads its totals). */
function fakeManifest(input: string, output: string): LocaleManifest {
  return {
    marsignVersion: 'test',
    input,
    output,
    container: 'mar',
    profile: 'dev',
    dryRun: false,
    passthroughVerified: true,
    entries: [],
    totals: {
      entries: 0,
      passthrough: 0,
      signed: 0,
      shared: 0,
      cached: 0,
      skippedInvalid: 0,
      passthroughDecoded: 0,
      signOperations: 0,
      hits: 0,
      misses: 0,
      inputBytes: 0,
      outputBytes: 0,
    },
    timings: { startedAt: new Date().toISOString(), ms: 0 },
  };
}

test('a release locale starts once its own input is planned, while the other inputs are still being planned', async () => {
  const dir = tempDir();
  const ls = locales(dir);
  const started: string[] = [];
  let firstStarted: () => void = () => undefined;
  const first = new Promise<void>((r) => (firstStarted = r));
  const signer: LocaleSigner = {
    profile: async () => ({}),
    plan: async (_profile, inputs, _ledger, _signal, o) => {
      const plan: ReleasePlan = { inputs: new Map(), misses: [] };
      o?.onPlanned?.(inputs[0]!, plan);
      // The rest of the plan waits for the first locale: a release that waited for the whole plan
      // before starting any locale would wait here until the timeout.
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000).unref());
      assert.notEqual(
        await Promise.race([first, timeout]),
        'timeout',
        'no locale started before the plan ended',
      );
      for (const input of inputs.slice(1)) o?.onPlanned?.(input, plan);
      return plan;
    },
    signLocale: async (o) => {
      started.push(o.locale!);
      assert.ok(o.plan, 'the locale gets the plan so far');
      if (o.input === ls[0]!.input) firstStarted();
      return fakeManifest(o.input, o.output);
    },
  };
  const report = await signRelease({
    signer,
    release: 'overlap',
    source: dir,
    profile: 'dev',
    locales: ls,
    outDir: join(dir, 'out'),
    concurrency: 1,
  });
  assert.equal(report.totals.failed, 0);
  assert.deepEqual(started, [...LOCALES]);
});

for (const plannedFirst of [1, 0]) {
  test(`a plan that fails after ${plannedFirst} input(s) fails the release, no locale starts after it, and the last release's files go only once a locale starts`, async () => {
    const dir = tempDir();
    const ls = locales(dir);
    const outDir = join(dir, 'out');
    mkdirSync(outDir, { recursive: true });
    for (const f of ['release-manifest.json', 'SHA512SUMS']) writeFileSync(join(outDir, f), 'last run\n');
    const started: string[] = [];
    const signer: LocaleSigner = {
      profile: async () => ({}),
      plan: async (_profile, inputs, _ledger, _signal, o) => {
        const plan: ReleasePlan = { inputs: new Map(), misses: [] };
        for (const input of inputs.slice(0, plannedFirst)) o?.onPlanned?.(input, plan);
        await new Promise((r) => setTimeout(r, 50));
        throw Object.assign(new Error('cache unreadable'), { code: 'CACHE_IO' });
      },
      signLocale: async (o) => {
        started.push(o.locale!);
        return fakeManifest(o.input, o.output);
      },
    };
    await assert.rejects(
      signRelease({
        signer,
        release: 'failing',
        source: dir,
        locales: ls,
        outDir,
        profile: 'dev',
        concurrency: 1,
      }),
      { code: 'CACHE_IO' },
    );
    assert.deepEqual(
      started,
      LOCALES.slice(0, plannedFirst),
      'only the locales planned before the failure ran',
    );
    for (const f of ['release-manifest.json', 'SHA512SUMS'])
      assert.equal(
        existsSync(join(outDir, f)),
        plannedFirst === 0,
        plannedFirst === 0
          ? `${f}: nothing was replaced, the last run's file stays`
          : `${f}: an output was replaced, the last run's file (listing its old digest) is gone`,
      );
  });
}

test('an input given twice is planned once and both its locales get its keys; a tier that cannot answer falls back to the file and leaves no lease held', async () => {
  const dir = tempDir();
  const config = await loadConfig(CONFIG_PATH);
  const cache = newCache(join(dir, 'cache'));
  const p = await Pipeline.create({ config, threads: 1, cache, audit: { locale: async () => undefined } });
  try {
    const de = fixtureMar('de');
    const inputs = [de, fixtureMar('fr'), de];
    const told: { input: string; keys: number; sha256?: string }[] = [];
    const records: unknown[] = [];
    const onPlanned = (input: string, so: ReleasePlan): void => {
      const got = so.inputs.get(input);
      records.push(got);
      told.push({ input, keys: got?.keys?.size ?? 0, ...(got?.sha256 ? { sha256: got.sha256 } : {}) });
    };
    await p.plan('dev', inputs, new RunLedger(), undefined, { outputCache: false, onPlanned });
    // The second mention is not planned again: the record its first locale may be reading stays.
    assert.equal(records[2], records[0], 'the same planned record for the input given twice');
    assert.deepEqual(
      told.map((t) => [t.input, t.keys > 0, t.sha256]),
      inputs.map((i) => [i, true, sha256File(i)]),
    );
    assert.equal(p.budget.inUse, 0);
    // The tier's lookup fails: the leased read gives up (its buffer kept for the next input: nothing
    // reads it any more), the file path plans it.
    const outputs = cache.outputs!;
    const hasOutput = outputs.hasOutput.bind(outputs);
    outputs.hasOutput = async () => {
      throw Object.assign(new Error('EIO'), { code: 'EIO' });
    };
    const allocated = p.budget.allocated;
    try {
      const plan = await p.plan('dev', inputs.slice(0, 2), new RunLedger(), undefined, { outputCache: true });
      // de and fr are the same size: both read into the buffer the first plan left.
      assert.equal(p.budget.allocated, allocated, 'a failed leased read gives its buffer back for reuse');
      for (const input of inputs.slice(0, 2)) {
        assert.ok((plan.inputs.get(input)?.keys?.size ?? 0) > 0, `${input}: keyed from the file`);
        assert.equal(plan.inputs.get(input)?.sha256, sha256File(input));
      }
      assert.equal(p.budget.inUse, 0, 'no lease held after a failed leased read');
    } finally {
      outputs.hasOutput = hasOutput;
    }
    // Two locales of one input sign through the release, both correct.
    const ls = locales(dir).slice(0, 2);
    ls[1] = { ...ls[1]!, input: ls[0]!.input };
    const report = await signRelease({
      signer: p,
      release: 'twice',
      source: dir,
      profile: 'dev',
      locales: ls,
      outDir: join(dir, 'out'),
      outputCache: false,
    });
    assert.equal(report.totals.failed, 0);
    assert.deepEqual(readFileSync(ls[0]!.output), readFileSync(ls[1]!.output));
  } finally {
    await p.close();
  }
});

for (const [label, budget] of [
  ['read whole into a leased buffer', undefined],
  ['no room in the budget: the locale takes it from the file', 16 * 1024],
] as const) {
  test(`the plan tells each input with its keys and takes its whole sha256 for the audit (${label}); the records carry it`, async () => {
    const dir = tempDir();
    const config = await loadConfig(CONFIG_PATH);
    const runs: LocaleAuditRun[] = [];
    const audit: AuditSink = { locale: async (run) => void runs.push(run) };
    const p = await Pipeline.create({
      config,
      threads: 1,
      cache: newCache(join(dir, 'cache')),
      outputCache: false,
      audit,
      ...(budget !== undefined ? { memoryBudget: budget } : {}),
    });
    try {
      const inputs = LOCALES.map(fixtureMar);
      const told: { input: string; keys: number }[] = [];
      const plan = await p.plan('dev', inputs, new RunLedger(), undefined, {
        outputCache: false,
        onPlanned: (input, so) => told.push({ input, keys: so.inputs.get(input)?.keys?.size ?? 0 }),
      });
      assert.deepEqual(
        told.map((t) => t.input),
        inputs,
        'each input told once, in order',
      );
      for (const t of told) assert.ok(t.keys > 0, `${t.input}: its keys are in the plan when it is told`);
      for (const input of inputs) {
        const got = plan.inputs.get(input)!.sha256;
        // Without room for the whole input, the plan leaves the digest to the locale (one pass either way).
        if (budget === undefined) assert.equal(got, sha256File(input), input);
        else assert.equal(got, undefined);
      }
      const report = await signRelease({
        signer: p,
        release: 'audited',
        source: dir,
        profile: 'dev',
        locales: locales(dir),
        outDir: join(dir, 'out'),
        outputCache: false,
      });
      assert.equal(report.totals.failed, 0);
      assert.equal(runs.length, LOCALES.length);
      for (const run of runs)
        assert.equal(run.inputSha256, sha256File(run.manifest.input), run.manifest.input);
    } finally {
      await p.close();
    }
  });
}

test('an aborted release plans no further input, and still tells each one (its locale then sees the abort)', async () => {
  const dir = tempDir();
  const config = await loadConfig(CONFIG_PATH);
  const p = await Pipeline.create({ config, threads: 1, cache: newCache(join(dir, 'cache')) });
  try {
    const inputs = LOCALES.map(fixtureMar);
    const ac = new AbortController();
    const told: string[] = [];
    const plan = await p.plan('dev', inputs, new RunLedger(), ac.signal, {
      outputCache: false,
      onPlanned: (input) => {
        told.push(input);
        if (told.length === 1) ac.abort(new Error('cancelled'));
      },
    });
    assert.deepEqual(told, inputs, 'every input told once');
    assert.deepEqual([...plan.inputs.keys()], inputs.slice(0, 1), 'only the input planned before the abort');
  } finally {
    await p.close();
  }
});

test("a release that cannot remove its last run's files fails with that error at once, and its planning stops", async () => {
  const dir = tempDir();
  const ls = locales(dir);
  const outDir = join(dir, 'out');
  // A directory where the last report was: unlink refuses it (EISDIR or EPERM), not ENOENT.
  mkdirSync(join(outDir, 'release-manifest.json', 'x'), { recursive: true });
  let planStopped = false;
  const signer: LocaleSigner = {
    profile: async () => ({}),
    plan: async (_profile, inputs, _ledger, signal, o) => {
      const plan: ReleasePlan = { inputs: new Map(), misses: [] };
      o?.onPlanned?.(inputs[0]!, plan);
      // The rest of the plan goes on until it is stopped (or 10 s, which fails the test).
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 10_000);
        signal?.addEventListener('abort', () => {
          planStopped = true;
          clearTimeout(t);
          resolve();
        });
      });
      throw Object.assign(new Error('stopped'), { code: 'PLAN_STOPPED' });
    },
    signLocale: async (o) => fakeManifest(o.input, o.output),
  };
  const t0 = Date.now();
  await assert.rejects(
    signRelease({ signer, release: 'stuck', source: dir, locales: ls, outDir, profile: 'dev' }),
    (err: NodeJS.ErrnoException) => err.code === 'EISDIR' || err.code === 'EPERM',
  );
  assert.ok(planStopped, 'the plan was told to stop');
  assert.ok(Date.now() - t0 < 5_000, 'the error came at once, not after the plan');
});
