/**
 * Issue 10.1: confinement is enforced when a worker opens a locale's files, not only at submit time.
 * The repro with a real `marsign worker`: enqueue with no worker running, then swap an input for a
 * link to a file outside the roots and an output directory for a link to a directory outside, then start
 * a worker. Both locales fail at once with PATH_ESCAPE; nothing is read or written outside.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { BullReleaseQueue } from '../../src/queue/bullmq.js';
import { redisSettings } from '../../src/queue/connection.js';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { runCli } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { copyRelease, listFiles, spawnWorker, waitFor, writeConfig, type WorkerProcess } from './harness.js';

describe('open-time confinement (worker)', { skip: REDIS_SKIP, timeout: 150_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let outside: string;
  let cfg: string;
  let queue: BullReleaseQueue;
  let worker: WorkerProcess | undefined;

  before(async () => {
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-confine-'));
    // Outside every root (the config's roots are `dir` and the fixtures).
    outside = mkdtempSync(join(tmpdir(), 'marsign-outside-'));
    cfg = writeConfig(dir, redis.url, ['dev']);
    queue = new BullReleaseQueue(redisSettings(await loadConfig(cfg)));
  });

  after(async () => {
    if (worker?.alive) worker.proc.kill('SIGKILL');
    await queue?.close();
    await redis?.stop();
    for (const d of [dir, outside]) if (d) rmSync(d, { recursive: true, force: true });
  });

  test('links swapped in after submit: the locales fail with PATH_ESCAPE, nothing outside is read or written', async () => {
    const rel = join(dir, 'rel');
    const inputs = copyRelease(rel, ['en-US', 'de']);
    const out = join(dir, 'out');
    const manifest = join(rel, 'release.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        release: 'swapped',
        profile: 'dev',
        output: out,
        locales: { 'en-US': 'en-US/complete.mar', de: 'de/complete.mar' },
      }),
    );
    // Submitted while every path is a plain file or directory inside the roots.
    const r = await runCli(['enqueue', manifest, '-c', cfg]);
    assert.equal(r.code, 0, r.stderr);

    // Bait that is not a MAR: reading it would fail with a format error, not a confinement one.
    const bait = join(outside, 'bait.mar');
    writeFileSync(bait, 'not a MAR: if this is read the error is a format error\n');
    rmSync(inputs['en-US']!);
    symlinkSync(bait, inputs['en-US']!);
    const outsideOut = join(outside, 'out-de');
    mkdirSync(outsideOut);
    mkdirSync(out);
    symlinkSync(outsideOut, join(out, 'de'));
    const outsideBefore = listFiles(outside);

    worker = spawnWorker(cfg);
    await worker.ready();
    const s = await waitFor<ReleaseStatus>(
      'both locales to fail',
      async () => {
        const st = await queue.get('swapped');
        return st && st.locales.every((l) => l.state === 'failed' || l.state === 'completed')
          ? st
          : undefined;
      },
      90_000,
      200,
    );
    const byLocale = Object.fromEntries(s.locales.map((l) => [l.locale, l]));
    for (const [locale, path] of [
      ['en-US', inputs['en-US']!],
      ['de', join(out, 'de')],
    ] as const) {
      const l = byLocale[locale]!;
      assert.equal(l.state, 'failed', `${locale}: ${JSON.stringify(l)}`);
      assert.equal(l.error?.code, 'PATH_ESCAPE', `${locale}: ${JSON.stringify(l.error)}`);
      assert.equal(l.error?.name, 'PolicyError');
      assert.equal(l.error?.details?.locale, locale);
      assert.ok(l.error?.message.includes(path), l.error?.message);
      assert.ok(l.error?.message.startsWith(`locale ${locale}: `), l.error?.message);
      // Final at once: a policy refusal is not retried.
      assert.equal(l.attempts, 1, `${locale} attempts`);
    }
    assert.equal(byLocale['en-US']!.error?.details?.resolved, bait);
    assert.equal(byLocale.de!.error?.details?.resolved, outsideOut);
    assert.equal(s.state, 'failed');

    // Nothing outside changed; no output, manifest or temp file anywhere in the output tree.
    assert.deepEqual(listFiles(outside), outsideBefore);
    assert.equal(readFileSync(bait, 'utf8'), 'not a MAR: if this is read the error is a format error\n');
    assert.deepEqual(listFiles(out), []);
  });
});
