import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { RedisCoordinator } from '../../src/queue/redis-coordinator.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
const clients: Redis[] = [];
function client(): Redis {
  const c = redis.client();
  clients.push(c);
  return c;
}

before(async () => {
  if (!REDIS_SKIP) redis = await TestRedis.start();
});
after(async () => {
  for (const c of clients) c.disconnect();
  await redis?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test(
  'two coordinators on separate connections run work once per key; the other reads the result',
  { skip: REDIS_SKIP },
  async () => {
    const store = new Map<string, string>();
    let works = 0;
    const make = () => new RedisCoordinator(client(), { keyPrefix: 't1:', lockMs: 2000, pollMs: 20 });
    const a = make();
    const b = make();
    const run = (c: RedisCoordinator, key: string) =>
      c.once(
        key,
        async () => store.get(key),
        async () => {
          works++;
          await sleep(150);
          store.set(key, `v-${key}`);
          return `v-${key}`;
        },
      );
    const results = await Promise.all([run(a, 'k1'), run(b, 'k1'), run(a, 'k1'), run(b, 'k2'), run(a, 'k2')]);
    assert.deepEqual(results, ['v-k1', 'v-k1', 'v-k1', 'v-k2', 'v-k2']);
    assert.equal(works, 2);
    assert.equal(a.stats.acquired + b.stats.acquired, 2);
    assert.ok(a.stats.waited + b.stats.waited >= 1);
    assert.equal(await clients[0]!.exists('t1:k1', 't1:k2'), 0, 'locks released');
  },
);

test('a long holder keeps its lock alive by renewing it', { skip: REDIS_SKIP }, async () => {
  const store = new Map<string, string>();
  let works = 0;
  const a = new RedisCoordinator(client(), { keyPrefix: 't2:', lockMs: 300, renewMs: 80, pollMs: 20 });
  const b = new RedisCoordinator(client(), { keyPrefix: 't2:', lockMs: 300, renewMs: 80, pollMs: 20 });
  const work = async () => {
    works++;
    await sleep(900);
    store.set('k', 'v');
    return 'v';
  };
  const pa = a.once('k', async () => store.get('k'), work);
  await sleep(50);
  const pb = b.once('k', async () => store.get('k'), work);
  assert.deepEqual(await Promise.all([pa, pb]), ['v', 'v']);
  assert.equal(works, 1, 'the waiter did not take over a live, renewed lock');
});

test('an expired lock of a dead holder is taken over', { skip: REDIS_SKIP }, async () => {
  const c = client();
  // A holder that died: its lock is there but nobody renews it.
  await c.set('t3:k', 'dead-token', 'PX', 300);
  const b = new RedisCoordinator(client(), { keyPrefix: 't3:', lockMs: 1000, pollMs: 20 });
  let works = 0;
  const v = await b.once(
    'k',
    async () => undefined,
    async () => {
      works++;
      return 'mine';
    },
  );
  assert.equal(v, 'mine');
  assert.equal(works, 1);
  assert.equal(b.stats.takeovers, 1);
});

test('a failed holder releases its lock so a waiter can retry the work', { skip: REDIS_SKIP }, async () => {
  const a = new RedisCoordinator(client(), { keyPrefix: 't4:', lockMs: 5000, pollMs: 20 });
  const b = new RedisCoordinator(client(), { keyPrefix: 't4:', lockMs: 5000, pollMs: 20 });
  const pa = a.once(
    'k',
    async () => undefined,
    async () => {
      await sleep(100);
      throw new Error('boom');
    },
  );
  await sleep(20);
  const pb = b.once(
    'k',
    async () => undefined,
    async () => 'second',
  );
  await assert.rejects(pa, /boom/);
  assert.equal(await pb, 'second');
});
