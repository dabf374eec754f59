/**
 * The release plan and the locales overlap (src/pipeline/release.ts `PlanTracker`, plan.ts `planRelease`
 * `onPlanned`): a locale starts once its own input is planned, not after the whole plan; a failed plan
 * still fails the release. The plan takes each input's whole sha256 for the audit record (read whole into
 * a leased buffer, or hashed in chunks when the budget has no room), and the records carry the right one.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
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

test('a plan that fails fails the release, and no locale starts after it', async () => {
  const dir = tempDir();
  const ls = locales(dir);
  const started: string[] = [];
  const signer: LocaleSigner = {
    profile: async () => ({}),
    plan: async (_profile, inputs, _ledger, _signal, o) => {
      const plan: ReleasePlan = { inputs: new Map(), misses: [] };
      o?.onPlanned?.(inputs[0]!, plan);
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
      profile: 'dev',
      locales: ls,
      outDir: join(dir, 'out'),
      concurrency: 1,
    }),
    { code: 'CACHE_IO' },
  );
  assert.deepEqual(started, ['en-US'], 'only the locale planned before the failure ran');
});

for (const [label, budget] of [
  ['read whole into a leased buffer', undefined],
  ['no room in the budget: hashed in chunks', 16 * 1024],
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
