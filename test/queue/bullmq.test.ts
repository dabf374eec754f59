import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  BullReleaseQueue,
  clientIndexKey,
  errorFromFailedReason,
  localeJobId,
} from '../../src/queue/bullmq.js';
import { redisSettings } from '../../src/queue/connection.js';
import type { ResolvedRelease } from '../../src/queue/types.js';
import { failureMessage } from '../../src/queue/worker.js';
import { FormatError } from '../../src/errors.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let queue: BullReleaseQueue;

before(async () => {
  if (REDIS_SKIP) return;
  redis = await TestRedis.start();
  queue = new BullReleaseQueue(
    redisSettings({ file: { redis: { url: redis.url, prefix: 'qt' }, profiles: {} } }, {}),
  );
});
after(async () => {
  await queue?.close();
  await redis?.stop();
});

const manifest = (release: string, locales: string[]): ResolvedRelease => ({
  release,
  profile: 'dev',
  locales: locales.map((locale) => ({
    locale,
    input: join('/in', locale, 'complete.mar'),
    outputDir: join('/out', locale),
    output: join('/out', locale, 'complete.mar'),
  })),
});

test('failure messages round-trip their code through failedReason', () => {
  const msg = failureMessage(new FormatError('mar', 'MAR_BAD_MAGIC', 'bad magic 0x00000000', 0));
  assert.equal(msg, 'MAR_BAD_MAGIC: bad magic 0x00000000 (at offset 0)');
  assert.deepEqual(errorFromFailedReason(msg), {
    name: 'Error',
    code: 'MAR_BAD_MAGIC',
    message: 'bad magic 0x00000000 (at offset 0)',
  });
  assert.equal(errorFromFailedReason('something odd')?.code, 'INTERNAL');
  assert.equal(errorFromFailedReason(undefined), undefined);
  assert.equal(localeJobId('fx-1', 'en-US'), 'fx-1@en-US');
});

test(
  'a submitted release is one parent and one child per locale, queued, with its submitter; re-submitting is a no-op',
  { skip: REDIS_SKIP },
  async () => {
    const first = await queue.submit(manifest('rel-a', ['de', 'fr']), { client: 'alice' });
    assert.deepEqual(first, { release: 'rel-a', created: true, locales: ['de', 'fr'], client: 'alice' });
    const s = await queue.get('rel-a');
    assert.ok(s);
    assert.equal(s.state, 'queued');
    assert.equal(s.client, 'alice');
    assert.deepEqual(
      s.locales.map((l) => [l.locale, l.state, l.jobId, l.output]),
      [
        ['de', 'queued', 'rel-a@de', '/out/de/complete.mar'],
        ['fr', 'queued', 'rel-a@fr', '/out/fr/complete.mar'],
      ],
    );
    assert.equal(s.etaMs, null);
    const again = await queue.submit(manifest('rel-a', ['de', 'fr', 'ja']), { client: 'bob' });
    assert.deepEqual(again, { release: 'rel-a', created: false, locales: ['de', 'fr'], client: 'alice' });
    const counts = await queue.counts();
    assert.equal(counts.locales.waiting, 2);
    assert.equal(counts.releases['waiting-children'], 1);
    // Job data holds paths, ids, the profile name and the submitter only.
    const job = await queue.locales.getJob('rel-a@de');
    assert.deepEqual(Object.keys(job!.data).sort(), [
      'client',
      'input',
      'locale',
      'output',
      'profile',
      'release',
    ]);
    assert.equal(job!.data.client, 'alice');
    assert.equal((await queue.releases.getJob('rel-a'))!.data.client, 'alice');
    assert.equal(await queue.get('nope'), undefined);
    await queue.submit(manifest('rel-b', ['ja']), { client: 'bob' });
    await queue.submit(manifest('rel-c', ['ja']), { client: 'alice' });
    assert.deepEqual((await queue.list()).map((r) => r.release).sort(), ['rel-a', 'rel-b', 'rel-c']);
    // A client's list comes from its index, newest first; ids whose job is gone are pruned from it.
    const client = new Redis(redis.url);
    try {
      const index = clientIndexKey('qt', 'alice');
      await client.zadd(index, Date.now() + 1000, 'ghost');
      assert.deepEqual(
        (await queue.list({ client: 'alice' })).map((r) => r.release),
        ['rel-c', 'rel-a'],
      );
      assert.equal(await client.zscore(index, 'ghost'), null);
      assert.deepEqual(
        (await queue.list({ client: 'alice', limit: 1 })).map((r) => r.release),
        ['rel-c'],
      );
      assert.deepEqual(
        (await queue.list({ client: 'bob' })).map((r) => r.release),
        ['rel-b'],
      );
      assert.deepEqual(await queue.list({ client: 'carol' }), []);
    } finally {
      client.disconnect();
    }
  },
);

test(
  'a locale that completes between reading its job and its state is reported with its result',
  { skip: REDIS_SKIP },
  async () => {
    const result = { entries: 1, outputSha256: 'a'.repeat(64) };
    const base = { data: { input: 'recipe:x', output: 'de/a.mar' }, attemptsMade: 1, progress: {} };
    // The job as read before the worker finished (no return value yet), then as it is afterwards.
    const stale = { ...base, returnvalue: null, getState: async () => 'completed' };
    const fresh = {
      ...base,
      returnvalue: result,
      finishedOn: 2,
      processedOn: 1,
      getState: async () => 'completed',
    };
    const q = queue as unknown as {
      locales: { getJob(id: string): Promise<unknown> };
      localeStatus(
        release: string,
        locale: string,
        beats: Map<string, unknown>,
      ): Promise<{ status: { state: string; result?: unknown } }>;
    };
    const reads = [stale, fresh];
    const real = q.locales.getJob;
    q.locales.getJob = async () => reads.shift() ?? fresh;
    try {
      const { status: s } = await q.localeStatus('race-1', 'de', new Map());
      assert.equal(s.state, 'completed');
      assert.deepEqual(s.result, result);
    } finally {
      q.locales.getJob = real;
    }
  },
);
