/**
 * Issue 10.9: a Redis without persistence restarted mid-release loses the release. `enqueue --wait` says
 * so (RELEASE_LOST, naming the restart and that persistence is off) instead of RELEASE_NOT_FOUND; the
 * worker, `/__heartbeat__` and `marsign status` warn that persistence is off; and the same release id
 * can be submitted again, the outputs written before the loss served from the output cache.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { BullReleaseQueue } from '../../src/queue/bullmq.js';
import { redisSettings } from '../../src/queue/connection.js';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { runCli } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { checkSignedOutput } from '../pipeline/_support.js';
import {
  TOKEN_ENV,
  assertOutputTree,
  copyRelease,
  readManifest,
  spawnWorker,
  startServer,
  waitFor,
  writeConfig,
  type WorkerProcess,
} from './harness.js';

const TEN = ['en-US', 'de', 'fr', 'ja', 'es-ES', 'it', 'pl', 'ru', 'nl', 'sv-SE'];

describe('Redis without persistence restarted mid-release', { skip: REDIS_SKIP, timeout: 240_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let cfg: string;
  let queue: BullReleaseQueue;
  let worker: WorkerProcess | undefined;

  before(async () => {
    // TestRedis runs with `--save '' --appendonly no`: no persistence.
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-loss-'));
    cfg = writeConfig(dir, redis.url, ['dev']);
    process.env[TOKEN_ENV] = randomBytes(24).toString('hex');
    queue = new BullReleaseQueue(redisSettings(await loadConfig(cfg)));
  });

  after(async () => {
    if (worker?.alive) {
      worker.proc.kill('SIGCONT');
      worker.proc.kill('SIGKILL');
    }
    await queue?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('persistence off is reported by the worker, the heartbeat and status', async () => {
    worker = spawnWorker(cfg);
    await worker.ready();
    assert.match(worker.log, /"appendonly":"no"[^\n]*"msg":"Redis persistence is off/);

    const server = await startServer(cfg);
    try {
      const res = await fetch(`${server.url}/__heartbeat__`);
      const hb = (await res.json()) as {
        checks: Record<string, { status: string; fatal: boolean; detail: unknown }>;
      };
      const check = hb.checks.redis_persistence;
      assert.ok(check, JSON.stringify(hb));
      assert.equal(check.status, 'warning');
      assert.equal(check.fatal, false);
      assert.deepEqual(check.detail, { state: 'off', appendonly: 'no', save: '' });
    } finally {
      await server.close();
    }

    const st = await runCli(['status', '-c', cfg, '--json']);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stderr, /^marsign: warning: Redis persistence is off \(appendonly no, save ""\)/m);
    assert.deepEqual(JSON.parse(st.stdout), []);
  });

  test('enqueue --wait says RELEASE_LOST; the same id re-submitted completes from the output cache', async () => {
    const rel = join(dir, 'rel');
    copyRelease(rel, TEN);
    const out = join(dir, 'out');
    const manifest = join(rel, 'release.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        release: 'lost',
        profile: 'dev',
        output: out,
        locales: Object.fromEntries(TEN.map((l) => [l, `${l}/complete.mar`])),
      }),
    );
    const waiting = runCli(['enqueue', manifest, '-c', cfg, '--wait'], { timeoutMs: 120_000 });

    // Freeze the worker once some locales are done, so exactly those were written before the loss.
    await waitFor(
      'two locales completed',
      async () => {
        const s = await queue.get('lost');
        return s && s.totals.completed >= 2 ? s : undefined;
      },
      90_000,
      10,
    );
    worker!.proc.kill('SIGSTOP');
    const before: ReleaseStatus = (await queue.get('lost'))!;
    const done = before.locales.filter((l) => l.state === 'completed').map((l) => l.locale);
    assert.ok(done.length < TEN.length, `only some locales done before the loss (${done.length})`);
    const lostAt = new Date().toISOString();
    await redis.restart(300, { save: false });
    worker!.proc.kill('SIGCONT');

    const lost = await waiting;
    assert.equal(lost.code, 2, lost.stderr);
    assert.match(lost.stderr, /^marsign: RELEASE_LOST: /m);
    assert.match(lost.stderr, /Redis lost release "lost"/);
    assert.match(lost.stderr, /restarted/);
    assert.match(lost.stderr, /persistence is off \(appendonly no, save ""\)/);
    assert.match(lost.stderr, new RegExp(`\\d+ of ${TEN.length} locales had completed`));
    assert.doesNotMatch(lost.stderr, /RELEASE_NOT_FOUND/);
    assert.equal(await queue.get('lost'), undefined, 'the restart really lost the release');

    // The same id again, without a new one.
    const again = await runCli(['enqueue', manifest, '-c', cfg, '--wait', '--json'], { timeoutMs: 120_000 });
    assert.equal(again.code, 0, again.stderr);
    const s = JSON.parse(again.stdout) as ReleaseStatus;
    assert.equal(s.release, 'lost');
    assert.equal(s.state, 'completed', JSON.stringify(s.locales.map((l) => [l.locale, l.state, l.error])));
    assert.equal(s.totals.completed, TEN.length);
    assertOutputTree(out, TEN);
    for (const locale of done) {
      const m = readManifest(join(out, locale, 'complete.mar'));
      assert.equal(m.outputCache, 'hit', `${locale} served from the output cache`);
      assert.ok(m.timings.startedAt > lostAt, `${locale}'s manifest is from the re-submission`);
    }
    // Every output verifies (openssl, osslsigncode): the re-submission signed the rest for real.
    const scratch = mkdtempSync(join(tmpdir(), 'marsign-loss-check-'));
    try {
      for (const l of s.locales) {
        const m = readManifest(l.output);
        const signed = m.entries.filter((e) => e.action !== 'passthrough').map((e) => e.name);
        await checkSignedOutput(l.input, l.output, { signed, dir: scratch });
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
    assert.match(worker!.log, /"msg":"Redis restarted[^"]*lost/);
  });
});
