import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import type { LoadedConfig } from '../../src/config/types.js';
import {
  checkAuth,
  loadServerToken,
  parseCookies,
  safeEqual,
  sessionValue,
  SESSION_COOKIE,
} from '../../src/service/auth.js';
import { createLogger, scrubUrl } from '../../src/service/logger.js';
import { tempDir } from '../helpers/env.js';

const TOKEN = 'a-very-long-test-token-0123456789';

test('bearer, basic and session cookie are accepted; missing → missing, anything else → wrong', () => {
  assert.equal(checkAuth(TOKEN, {}), 'missing');
  assert.equal(checkAuth(TOKEN, { authorization: `Bearer ${TOKEN}` }), 'ok');
  assert.equal(checkAuth(TOKEN, { authorization: `bearer ${TOKEN}` }), 'ok');
  assert.equal(checkAuth(TOKEN, { authorization: 'Bearer nope' }), 'wrong');
  assert.equal(checkAuth(TOKEN, { authorization: `Bearer ${TOKEN}x` }), 'wrong');
  assert.equal(
    checkAuth(TOKEN, { authorization: `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}` }),
    'ok',
  );
  assert.equal(
    checkAuth(TOKEN, { authorization: `Basic ${Buffer.from('u:x').toString('base64')}` }),
    'wrong',
  );
  assert.equal(checkAuth(TOKEN, { authorization: 'Digest x' }), 'wrong');
  assert.equal(checkAuth(TOKEN, { cookie: `a=b; ${SESSION_COOKIE}=${sessionValue(TOKEN)}` }), 'ok');
  assert.equal(
    checkAuth(TOKEN, { cookie: `${SESSION_COOKIE}=${sessionValue('other-token-0123456789')}` }),
    'wrong',
  );
  assert.equal(checkAuth(TOKEN, { cookie: 'a=b' }), 'missing');
  assert.notEqual(sessionValue(TOKEN), TOKEN);
  assert.ok(safeEqual('x', 'x'));
  assert.ok(!safeEqual('x', 'xx'));
  assert.deepEqual(parseCookies(' a=1; b = %20x ;bad; =c'), { a: '1', b: ' x' });
});

const config = (server: Record<string, unknown>, dir = '/nonexistent'): LoadedConfig => ({
  path: join(dir, 'c.json'),
  sha256: '0',
  dir,
  file: { server, profiles: {} },
});

test('the token comes from the env var or file the config names, and must be long enough', async () => {
  await assert.rejects(loadServerToken(config({})), { code: 'CONFIG_SERVER_TOKEN' });
  await assert.rejects(loadServerToken(config({ tokenEnv: 'MARSIGN_T_AUTH_UNSET' })), {
    code: 'SECRET_MISSING',
  });
  process.env.MARSIGN_T_AUTH_SHORT = 'tiny5';
  await assert.rejects(
    loadServerToken(config({ tokenEnv: 'MARSIGN_T_AUTH_SHORT' })),
    (e: Error & { code: string }) => e.code === 'CONFIG_SERVER_TOKEN' && !e.message.includes('tiny5'),
  );
  process.env.MARSIGN_T_AUTH_GOOD = TOKEN;
  assert.equal(await loadServerToken(config({ tokenEnv: 'MARSIGN_T_AUTH_GOOD' })), TOKEN);
  const dir = tempDir();
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  assert.equal(await loadServerToken(config({ tokenFile: 'token' }, dir)), TOKEN);
});

test('logs redact authorization, cookies, tokens and passwords, and token query parameters', () => {
  let out = '';
  const log = createLogger({}, new Writable({ write: (c: Buffer, _e, cb) => ((out += c.toString()), cb()) }));
  log.info(
    {
      req: {
        method: 'GET',
        url: `/queues?x=1&token=${TOKEN}`,
        headers: { authorization: `Bearer ${TOKEN}` },
      },
    },
    'request',
  );
  log.info({ token: TOKEN, redis: { password: TOKEN }, options: { password: TOKEN } }, 'settings');
  assert.ok(!out.includes(TOKEN), out);
  assert.match(out, /token=\[Redacted\]/);
  assert.equal(scrubUrl(`/a?token=${TOKEN}&b=2`), '/a?token=[Redacted]&b=2');
});
