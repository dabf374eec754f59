import assert from 'node:assert/strict';
import { test } from 'node:test';
import { redisSettings } from '../../src/queue/connection.js';

const cfg = (redis: Record<string, unknown>) => ({ file: { redis, profiles: {} } });

test('URL, db, TLS and prefix come from the config; the display form has no credentials', () => {
  const s = redisSettings(cfg({ url: 'rediss://user:pw@redis.example:6380/3', prefix: 'prod' }), {});
  assert.equal(s.options.host, 'redis.example');
  assert.equal(s.options.port, 6380);
  assert.equal(s.options.db, 3);
  assert.equal(s.options.username, 'user');
  assert.equal(s.options.password, 'pw');
  assert.deepEqual(s.options.tls, { servername: 'redis.example' });
  assert.equal(s.prefix, 'prod');
  assert.equal(s.display, 'rediss://redis.example:6380/3');
});

test('the password comes from the environment variable the config names; MARSIGN_REDIS_URL overrides the URL', () => {
  const s = redisSettings(cfg({ url: 'redis://a:1', passwordEnv: 'REDIS_PW', tls: true }), {
    REDIS_PW: 's3cret',
    MARSIGN_REDIS_URL: 'redis://b:2',
  });
  assert.equal(s.options.host, 'b');
  assert.equal(s.options.port, 2);
  assert.equal(s.options.password, 's3cret');
  assert.ok(s.options.tls);
  assert.ok(!s.display.includes('s3cret'));
  assert.equal(redisSettings(undefined, {}).display, 'redis://127.0.0.1:6379/0');
});

test('config errors name the problem, never the secret', () => {
  assert.throws(() => redisSettings(cfg({ passwordEnv: 'NOPE' }), {}), { code: 'SECRET_MISSING' });
  assert.throws(() => redisSettings(cfg({ url: 'http://x' }), {}), { code: 'CONFIG_REDIS_URL' });
  assert.throws(
    () => redisSettings(cfg({ url: 'not a url with pw:hunter2@' }), {}),
    (e: Error & { code?: string }) => e.code === 'CONFIG_REDIS_URL' && !e.message.includes('hunter2'),
  );
  assert.throws(() => redisSettings(cfg({ url: 'redis://h/x' }), {}), { code: 'CONFIG_REDIS_URL' });
  assert.throws(() => redisSettings(cfg({ prefix: 'a:b' }), {}), { code: 'CONFIG_REDIS_PREFIX' });
});
