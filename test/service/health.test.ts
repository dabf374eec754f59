import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { publishSnapshot, type WorkerSnapshot } from '../../src/queue/telemetry.js';
import { heartbeat } from '../../src/service/health.js';
import { localeHistogramText } from '../../src/service/metrics.js';
import { tempDir } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let client: Redis;
before(async () => {
  if (REDIS_SKIP) return;
  redis = await TestRedis.start();
  client = redis.client();
});
after(async () => {
  client?.disconnect();
  await redis?.stop();
});

function snapshot(id: string, canaryOk: boolean, buckets: number[] = []): WorkerSnapshot {
  return {
    id,
    host: 'h',
    pid: 1,
    version: '0',
    startedAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    concurrency: 2,
    accepting: true,
    pool: { threads: 2, utilisation: 0.5, queued: 0 },
    counters: {
      signOperations: 3,
      cacheHits: 1,
      cacheMisses: 3,
      cacheCorrupt: 0,
      cacheBytesServed: 10,
      localesCompleted: 2,
      localesFailed: 0,
      lockAcquired: 3,
      lockWaited: 0,
      lockTakeovers: 0,
    },
    localeSeconds: { buckets, sum: 4, count: buckets.reduce((a, b) => a + b, 0) },
    active: [],
    canary: {
      dev: canaryOk
        ? { ok: true, ms: 5, at: new Date().toISOString() }
        : {
            ok: false,
            ms: 5,
            at: new Date().toISOString(),
            error: { name: 'ConfigError', code: 'KEY_UNREADABLE', message: 'x' },
          },
    },
  };
}

test(
  'heartbeat: ok with a healthy worker, warning without workers, failed on a fatal check',
  { skip: REDIS_SKIP },
  async () => {
    const cacheDir = tempDir();
    // The test server starts without persistence; RDB save points (into its temp dir) make it persistent.
    await client.config('SET', 'save', '3600 1');
    let hb = await heartbeat({ redis: client, prefix: 'h1', cacheDir, profiles: ['dev'] });
    assert.equal(hb.checks.redis_persistence!.status, 'ok');
    assert.equal(hb.status, 'warning', 'no worker: degraded, not failed');
    assert.equal(hb.checks.workers!.status, 'warning');
    assert.equal(hb.checks['canary:dev']!.status, 'warning');

    await publishSnapshot(client, 'h1', snapshot('w1', true));
    hb = await heartbeat({ redis: client, prefix: 'h1', cacheDir, profiles: ['dev'] });
    assert.equal(hb.status, 'ok', JSON.stringify(hb));

    await publishSnapshot(client, 'h1', snapshot('w2', false));
    hb = await heartbeat({ redis: client, prefix: 'h1', cacheDir, profiles: ['dev'] });
    assert.equal(hb.checks['canary:dev']!.status, 'warning', 'one of two workers failing its canary');
    assert.equal(hb.status, 'warning');

    await publishSnapshot(client, 'h2', snapshot('w3', false));
    hb = await heartbeat({ redis: client, prefix: 'h2', cacheDir, profiles: ['dev'] });
    assert.equal(hb.checks['canary:dev']!.status, 'failed');
    assert.equal(hb.status, 'failed', 'every worker fails the canary: fatal');

    hb = await heartbeat({ redis: client, prefix: 'h1', cacheDir: join(cacheDir, 'missing'), profiles: [] });
    assert.equal(hb.checks.cache_dir!.status, 'failed');
    assert.equal(hb.status, 'failed');
  },
);

test('heartbeat: Redis without persistence is a warning, not a failure', { skip: REDIS_SKIP }, async () => {
  await publishSnapshot(client, 'h3', snapshot('w4', true));
  await client.config('SET', 'save', '');
  await client.config('SET', 'appendonly', 'no');
  const hb = await heartbeat({ redis: client, prefix: 'h3', cacheDir: tempDir(), profiles: ['dev'] });
  assert.deepEqual(hb.checks.redis_persistence, {
    status: 'warning',
    fatal: false,
    ms: hb.checks.redis_persistence!.ms,
    detail: { state: 'off', appendonly: 'no', save: '' },
  });
  assert.equal(hb.status, 'warning');
});

test("the locale histogram sums the workers' buckets cumulatively", () => {
  const text = localeHistogramText([snapshot('a', true, [1, 0, 2]), snapshot('b', true, [0, 1])]);
  assert.match(text, /^# TYPE marsign_locale_duration_seconds histogram$/m);
  assert.match(text, /^marsign_locale_duration_seconds_bucket\{le="0.5"\} 1$/m);
  assert.match(text, /^marsign_locale_duration_seconds_bucket\{le="1"\} 2$/m);
  assert.match(text, /^marsign_locale_duration_seconds_bucket\{le="2"\} 4$/m);
  assert.match(text, /^marsign_locale_duration_seconds_bucket\{le="\+Inf"\} 4$/m);
  assert.match(text, /^marsign_locale_duration_seconds_count 4$/m);
  assert.match(text, /^marsign_locale_duration_seconds_sum 8$/m);
});
