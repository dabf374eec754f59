import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { test } from 'node:test';
import type { ConfigFile, LoadedConfig } from '../../src/config/types.js';
import {
  ApiClient,
  ApiClients,
  LEGACY_CLIENT,
  SESSION_COOKIE,
  SESSION_MAX_AGE_S,
  loadClients,
  parseCookies,
  profileDenied,
  requiredScope,
  safeEqual,
} from '../../src/service/auth.js';
import { createLogger, scrubUrl } from '../../src/service/logger.js';
import { tempDir } from '../helpers/env.js';

const TOKEN = 'a-very-long-test-token-0123456789';
const OTHER = 'another-long-test-token-9876543210';
const sha = (s: string) => createHash('sha256').update(s).digest();

const clientsOf = () =>
  new ApiClients([
    new ApiClient('automation', sha(TOKEN), ['submit', 'read:own'], ['release']),
    new ApiClient('ops', sha(OTHER), ['read:all']),
  ]);

test('bearer, basic and session cookie name the client; missing → missing, anything else → wrong', () => {
  const clients = clientsOf();
  const who = (h: { authorization?: string; cookie?: string }) => {
    const r = clients.authenticate(h);
    return r.result === 'ok' ? r.client.name : r.result;
  };
  assert.equal(who({}), 'missing');
  assert.equal(who({ authorization: `Bearer ${TOKEN}` }), 'automation');
  assert.equal(who({ authorization: `bearer ${OTHER}` }), 'ops');
  assert.equal(who({ authorization: 'Bearer nope' }), 'wrong');
  assert.equal(who({ authorization: `Bearer ${TOKEN}x` }), 'wrong');
  assert.equal(who({ authorization: `Basic ${Buffer.from(`u:${OTHER}`).toString('base64')}` }), 'ops');
  assert.equal(who({ authorization: `Basic ${Buffer.from('u:x').toString('base64')}` }), 'wrong');
  assert.equal(who({ authorization: 'Digest x' }), 'wrong');
  const ops = clients.byToken(OTHER)!;
  const session = clients.sessionValue(ops);
  assert.equal(who({ cookie: `a=b; ${SESSION_COOKIE}=${session}` }), 'ops');
  assert.ok(!session.includes(OTHER) && !session.includes(sha(OTHER).toString('hex')));
  assert.equal(who({ cookie: 'a=b' }), 'missing');
  assert.ok(safeEqual('x', 'x'));
  assert.ok(!safeEqual('x', 'xx'));
  assert.deepEqual(parseCookies(' a=1; b = %20x ;bad; =c'), { a: '1', b: ' x' });
});

test('session cookies: bound to the client, its token, the server key and an expiry', () => {
  const clients = clientsOf();
  const ops = clients.byToken(OTHER)!;
  const now = Date.parse('2030-01-01T00:00:00Z');
  const v = clients.sessionValue(ops, now);
  assert.equal(clients.verifySession(v, now)?.name, 'ops');
  assert.equal(clients.verifySession(v, now + (SESSION_MAX_AGE_S - 1) * 1000)?.name, 'ops');
  assert.equal(clients.verifySession(v, now + SESSION_MAX_AGE_S * 1000), undefined, 'expired');
  const [name, exp, mac] = v.split('.') as [string, string, string];
  assert.equal(clients.verifySession(`automation.${exp}.${mac}`, now), undefined, 'other client');
  assert.equal(clients.verifySession(`${name}.${Number(exp) + 3600}.${mac}`, now), undefined, 'longer');
  assert.equal(clients.verifySession(`${name}.${exp}.${mac.slice(0, -1)}A`, now), undefined);
  assert.equal(clients.verifySession('forged', now), undefined);
  // Another server process (another random key), or the same client with a new token: no session.
  assert.equal(clientsOf().verifySession(v, now), undefined);
  const rotated = new ApiClients(
    [new ApiClient('ops', sha('a-rotated-token-0123456789'), ['read:all'])],
    Buffer.alloc(32, 7),
  );
  const same = new ApiClients([new ApiClient('ops', sha(OTHER), ['read:all'])], Buffer.alloc(32, 7));
  const v2 = same.sessionValue(same.list[0]!, now);
  assert.equal(same.verifySession(v2, now)?.name, 'ops');
  assert.equal(rotated.verifySession(v2, now), undefined);
});

test('scopes: admin implies all and every profile, read:all implies read:own; clients log without digests', () => {
  const admin = new ApiClient('root', sha(TOKEN), ['admin']);
  assert.deepEqual(admin.toJSON(), {
    name: 'root',
    scopes: ['submit', 'read:own', 'read:all', 'admin'],
    profiles: 'all',
  });
  assert.ok(admin.mayUseProfile('anything'));
  const ops = new ApiClient('ops', sha(TOKEN), ['read:all']);
  assert.ok(ops.has('read:own') && !ops.has('submit') && !ops.mayUseProfile('release'));
  assert.ok(ops.maySee('someone') && ops.maySee(undefined));
  const auto = new ApiClient('auto', sha(TOKEN), ['submit', 'read:own'], ['release']);
  assert.ok(auto.mayUseProfile('release') && !auto.mayUseProfile('nightly'));
  assert.ok(auto.maySee('auto') && !auto.maySee('ops') && !auto.maySee(undefined));
  const submitOnly = new ApiClient('bot', sha(TOKEN), ['submit'], ['release']);
  assert.ok(!submitOnly.maySee('bot'));
  const printed = JSON.stringify(auto) + inspect(auto, { showHidden: true, depth: 5 }) + inspect(clientsOf());
  for (const secret of [TOKEN, sha(TOKEN).toString('hex'), sha(TOKEN).toString('base64')])
    assert.ok(!printed.includes(secret), printed);

  assert.equal(profileDenied(auto, { profile: 'release' }), undefined);
  assert.equal(profileDenied(auto, { profile: 7 }), undefined, 'malformed: the validator answers');
  assert.equal(profileDenied(auto, null), undefined);
  assert.equal(profileDenied(auto, { profile: 'nightly' })?.error.code, 'AUTH_PROFILE');
  assert.equal(profileDenied(ops, { profile: 'release' })?.error.code, 'AUTH_PROFILE');
  assert.equal(profileDenied(admin, { profile: 'nope' }), undefined);
});

test('route scopes come from the matched route pattern and the method', () => {
  const cases: [string, string | undefined, string][] = [
    ['GET', '/metrics', 'public'],
    ['GET', '/__heartbeat__', 'public'],
    ['POST', '/releases', 'submit'],
    ['GET', '/releases', 'read:own'],
    ['GET', '/releases/:id', 'read:own'],
    ['HEAD', '/releases/:id', 'read:own'],
    ['GET', '/', 'read:all'],
    ['GET', '/overview', 'read:all'],
    ['GET', '/dashboard.js', 'read:all'],
    ['GET', '/queues', 'read:all'],
    ['GET', '/queues/api/queues', 'read:all'],
    ['PUT', '/queues/api/queues/:queueName/pause', 'admin'],
    ['POST', '/queues/api/queues/:queueName/add', 'admin'],
    ['PATCH', '/queues/api/queues/:queueName/:jobId/update-data', 'admin'],
    ['DELETE', '/releases/:id', 'client'],
    ['GET', undefined, 'client'],
  ];
  for (const [method, route, need] of cases)
    assert.equal(requiredScope(method, route), need, `${method} ${route}`);
});

const config = (server: ConfigFile['server'], dir = '/nonexistent'): LoadedConfig => ({
  path: join(dir, 'c.json'),
  sha256: '0',
  dir,
  file: { server, profiles: {} },
});

test('clients load from env, file or sha256; the legacy single token is the admin client "default"', async () => {
  await assert.rejects(loadClients(config({})), { code: 'CONFIG_SERVER_TOKEN' });
  await assert.rejects(loadClients(config({ tokenEnv: 'MARSIGN_T_AUTH_UNSET' })), {
    code: 'SECRET_MISSING',
  });
  process.env.MARSIGN_T_AUTH_SHORT = 'tiny5';
  await assert.rejects(
    loadClients(config({ clients: { a: { tokenEnv: 'MARSIGN_T_AUTH_SHORT', scopes: ['read:all'] } } })),
    (e: Error & { code: string }) =>
      e.code === 'CONFIG_SERVER_TOKEN' &&
      e.message.includes('server.clients.a') &&
      !e.message.includes('tiny5'),
  );
  process.env.MARSIGN_T_AUTH_GOOD = TOKEN;
  const legacy = await loadClients(config({ tokenEnv: 'MARSIGN_T_AUTH_GOOD' }));
  assert.ok(legacy.legacy);
  assert.equal(legacy.byToken(TOKEN)?.name, LEGACY_CLIENT);
  assert.ok(legacy.byToken(TOKEN)?.has('admin'));
  const dir = tempDir();
  writeFileSync(join(dir, 'token'), `${OTHER}\n`);
  assert.equal((await loadClients(config({ tokenFile: 'token' }, dir))).byToken(OTHER)?.name, 'default');

  const three = await loadClients(
    config(
      {
        clients: {
          auto: { tokenEnv: 'MARSIGN_T_AUTH_GOOD', scopes: ['submit'], profiles: ['release'] },
          ops: { tokenFile: 'token', scopes: ['read:all'] },
          hashed: { tokenSha256: sha('the-third-token-0123456789').toString('hex'), scopes: ['admin'] },
        },
      },
      dir,
    ),
  );
  assert.ok(!three.legacy);
  assert.equal(three.byToken(TOKEN)?.name, 'auto');
  assert.equal(three.byToken(OTHER)?.name, 'ops');
  assert.equal(three.byToken('the-third-token-0123456789')?.name, 'hashed');
  assert.equal(
    three.byToken(sha('the-third-token-0123456789').toString('hex')),
    undefined,
    'the hash is no token',
  );

  // The same token from two sources: refused, naming both clients and neither the token nor its hash.
  await assert.rejects(
    loadClients(
      config(
        {
          clients: {
            a: { tokenEnv: 'MARSIGN_T_AUTH_GOOD', scopes: ['read:all'] },
            b: { tokenSha256: sha(TOKEN).toString('hex'), scopes: ['admin'] },
          },
        },
        dir,
      ),
    ),
    (e: Error & { code: string }) =>
      e.code === 'CONFIG_SERVER_TOKEN' &&
      e.message.includes('server.clients.b') &&
      e.message.includes('server.clients.a') &&
      !e.message.includes(TOKEN) &&
      !e.message.includes(sha(TOKEN).toString('hex')),
  );

  // Session key from the config: sessions survive a restart (a second load) and work across servers.
  process.env.MARSIGN_T_AUTH_SESSION = 'a-session-secret-0123456789';
  const withKey = () =>
    loadClients(config({ tokenEnv: 'MARSIGN_T_AUTH_GOOD', sessionSecretEnv: 'MARSIGN_T_AUTH_SESSION' }));
  const a = await withKey();
  const b = await withKey();
  assert.equal(b.verifySession(a.sessionValue(a.list[0]!))?.name, 'default');
  const c = await loadClients(config({ tokenEnv: 'MARSIGN_T_AUTH_GOOD' }));
  assert.equal(c.verifySession(a.sessionValue(a.list[0]!)), undefined, 'default key: random per process');
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
