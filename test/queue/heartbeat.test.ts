/** Worker heartbeats in Redis (src/queue/heartbeat.ts), stamped and aged by the Redis server's clock. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import {
  beat,
  readHeartbeats,
  staleAfterMs,
  HEARTBEAT_KEEP_MS,
  type WorkerHeartbeat,
} from '../../src/queue/heartbeat.js';
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

const hb = (id: string, everyMs: number, stopped = false) => ({
  id,
  host: 'h',
  pid: 42,
  threads: 2,
  utilisation: 0.75,
  everyMs,
  active: ['r@de'],
  accepting: !stopped,
  ...(stopped ? { stopped } : {}),
});

test(
  'a beat is alive, then stale once it misses a few, its age growing; a clean stop says stopped',
  { skip: REDIS_SKIP },
  async () => {
    await beat(client, 'p', hb('w1', 100));
    await beat(client, 'p', hb('w2', 100, true));
    const read = async (id: string): Promise<WorkerHeartbeat> =>
      (await readHeartbeats(client, 'p')).find((h) => h.id === id)!;
    let [w1, w2] = [await read('w1'), await read('w2')];
    assert.equal(w1.state, 'alive');
    assert.equal(w1.utilisation, 0.75);
    assert.deepEqual(w1.active, ['r@de']);
    assert.equal(w2.state, 'stopped');
    const first = w1.ageMs;
    await new Promise((r) => setTimeout(r, staleAfterMs(100) + 300));
    [w1, w2] = [await read('w1'), await read('w2')];
    assert.equal(w1.state, 'stale');
    assert.ok(w1.ageMs >= first + staleAfterMs(100), `${w1.ageMs} grew from ${first}`);
    assert.equal(w2.state, 'stopped');
    // Beating again makes it alive again.
    await beat(client, 'p', hb('w1', 100));
    assert.equal((await readHeartbeats(client, 'p')).find((h) => h.id === 'w1')!.state, 'alive');
  },
);

test('heartbeats older than an hour, and garbage, are pruned when read', { skip: REDIS_SKIP }, async () => {
  await beat(client, 'q', hb('old', 2000));
  await beat(client, 'q', hb('new', 2000));
  const [s] = await client.time();
  await client.hset('q:heartbeat-at', 'old', Number(s) * 1000 - HEARTBEAT_KEEP_MS - 1000);
  await client.hset('q:heartbeats', 'junk', '{not json');
  await client.hset('q:heartbeat-at', 'junk', Number(s) * 1000);
  assert.deepEqual(
    (await readHeartbeats(client, 'q')).map((h) => h.id),
    ['new'],
  );
  assert.deepEqual(Object.keys(await client.hgetall('q:heartbeats')), ['new']);
  assert.deepEqual(Object.keys(await client.hgetall('q:heartbeat-at')), ['new']);
});
