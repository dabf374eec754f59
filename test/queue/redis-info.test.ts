/** What the queue reads of the Redis server itself (src/queue/redis-info.ts), on a real redis-server. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { describePersistence, redisPersistence, redisRunId } from '../../src/queue/redis-info.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
before(async () => {
  if (REDIS_SKIP) return;
  redis = await TestRedis.start();
});
after(async () => {
  await redis?.stop();
});

test('persistence: off, then on with RDB save points or AOF', { skip: REDIS_SKIP }, async () => {
  const c = redis.client();
  try {
    const off = await redisPersistence(c);
    assert.deepEqual(off, { state: 'off', appendonly: 'no', save: '' });
    assert.equal(describePersistence(off), 'off (appendonly no, save "")');
    await c.config('SET', 'save', '3600 1');
    assert.equal((await redisPersistence(c)).state, 'on');
    await c.config('SET', 'save', '');
    await c.config('SET', 'appendonly', 'yes');
    assert.deepEqual(await redisPersistence(c), { state: 'on', appendonly: 'yes', save: '' });
    await c.config('SET', 'appendonly', 'no');
  } finally {
    c.disconnect();
  }
});

test('persistence: unknown when CONFIG is refused (a managed Redis)', { skip: REDIS_SKIP }, async () => {
  const admin = redis.client();
  await admin.call('ACL', 'SETUSER', 'noconfig', 'on', '>secret-pw', '~*', '&*', '+@all', '-config');
  const c = new Redis(redis.url, { username: 'noconfig', password: 'secret-pw', maxRetriesPerRequest: 0 });
  try {
    const p = await redisPersistence(c);
    assert.equal(p.state, 'unknown');
    assert.match(p.reason!, /NOPERM/);
    assert.match(describePersistence(p), /^unknown \(/);
  } finally {
    c.disconnect();
    admin.disconnect();
  }
});

test('run_id changes when the server restarts', { skip: REDIS_SKIP }, async () => {
  const c = redis.client();
  const before = await redisRunId(c);
  c.disconnect();
  assert.match(before!, /^[0-9a-f]{40}$/);
  await redis.restart(0, { save: false });
  const d = redis.client();
  try {
    const now = await redisRunId(d);
    assert.match(now!, /^[0-9a-f]{40}$/);
    assert.notEqual(now, before);
  } finally {
    d.disconnect();
  }
});
