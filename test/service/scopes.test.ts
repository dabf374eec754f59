/**
 * API clients and scopes over real HTTP, against a private Redis and a real `marsign worker`: 401/403,
 * profiles out of scope refused before anything is queued, releases visible to their submitter only
 * (404 for another client's id), dashboard and bull-board for read:all, bull-board actions for admin,
 * the legacy single token, the CLI's submitter — and no token, token hash, session secret or session
 * cookie anywhere in the logs or in Redis afterwards.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { runCli } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import {
  FIXTURE,
  TOKEN_ENV,
  copyRelease,
  spawnWorker,
  startServer,
  waitFor,
  writeConfig,
  type RunningServer,
  type WorkerProcess,
} from './harness.js';

const tok = () => randomBytes(24).toString('hex');
const T = {
  automation: tok(),
  otherteam: tok(),
  submitbot: tok(),
  opsteam: tok(),
  rootadmin: tok(),
  legacy: tok(),
  session: tok(),
};
const sha = (s: string) => createHash('sha256').update(s).digest();

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON bodies of many shapes
type Res = { status: number; body: any; text: string; headers: Headers };

describe('api clients and scopes', { skip: REDIS_SKIP, timeout: 170_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let cfg: string;
  let server: RunningServer;
  let legacyServer: RunningServer | undefined;
  let worker: WorkerProcess;
  const cliOutput: string[] = [];
  const cookies: string[] = [];

  const bearer = (name: keyof typeof T) => ({ authorization: `Bearer ${T[name]}` });
  const api = async (path: string, init: RequestInit = {}, base = server.url): Promise<Res> => {
    const res = await fetch(base + path, { redirect: 'manual', ...init });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // HTML or text
    }
    return { status: res.status, body, text, headers: res.headers };
  };
  const get = (path: string, headers: Record<string, string> = {}) => api(path, { headers });
  const post = (doc: unknown, headers: Record<string, string>, base = server.url) =>
    api(
      '/releases',
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(doc),
      },
      base,
    );
  const manifest = (release: string, profile: string, locale: string, input: string) => ({
    release,
    profile,
    locales: { [locale]: { input, output: join(dir, 'out', release) } },
  });
  const ids = (r: Res) => (r.body.releases as ReleaseStatus[]).map((x) => x.release).sort();
  /** Redis keys, without those BullMQ and the workers refresh on their own (stalled checks, snapshots). */
  const redisKeys = async (): Promise<string[]> => {
    const c = new Redis(redis.url);
    try {
      return (await c.keys('*')).filter((k) => !/:stalled-check$|:worker:/.test(k)).sort();
    } finally {
      c.disconnect();
    }
  };
  /** Everything in Redis, as text: every key with its whole value, whatever its type. */
  const redisDump = async (): Promise<string> => {
    const c = new Redis(redis.url);
    const out: string[] = [];
    try {
      for (const key of await c.keys('*')) {
        const type = await c.type(key);
        let v: unknown;
        if (type === 'string') v = await c.get(key);
        else if (type === 'hash') v = await c.hgetall(key);
        else if (type === 'list') v = await c.lrange(key, 0, -1);
        else if (type === 'set') v = await c.smembers(key);
        else if (type === 'zset') v = await c.zrange(key, '0', '-1', 'WITHSCORES');
        else if (type === 'stream') v = await c.xrange(key, '-', '+');
        else v = `(${type})`;
        out.push(`${key} ${JSON.stringify(v)}`);
      }
    } finally {
      c.disconnect();
    }
    return out.join('\n');
  };
  /** /metrics and the health endpoints name no release and no client. */
  const assertPublicEndpointsAnonymous = async (): Promise<void> => {
    for (const path of ['/metrics', '/__heartbeat__', '/__lbheartbeat__', '/__version__']) {
      const r = await get(path);
      assert.ok(r.status === 200, `${path}: ${r.status}`);
      for (const name of ['rel-', 'automation', 'otherteam', 'submitbot', 'opsteam', 'rootadmin', 'cli:'])
        assert.ok(!r.text.includes(name), `${path} names ${name}: ${r.text}`);
    }
  };

  before(async () => {
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-scopes-'));
    writeFileSync(join(dir, 'otherteam.token'), `${T.otherteam}\n`, { mode: 0o600 });
    process.env.MARSIGN_T_SCOPE_AUTOMATION = T.automation;
    process.env.MARSIGN_T_SCOPE_OPS = T.opsteam;
    process.env.MARSIGN_T_SCOPE_ADMIN = T.rootadmin;
    process.env.MARSIGN_T_SCOPE_SESSION = T.session;
    cfg = writeConfig(dir, redis.url, ['dev', 'extra'], {
      sessionSecretEnv: 'MARSIGN_T_SCOPE_SESSION',
      clients: {
        automation: {
          tokenEnv: 'MARSIGN_T_SCOPE_AUTOMATION',
          profiles: ['dev'],
          scopes: ['submit', 'read:own'],
        },
        otherteam: {
          tokenFile: join(dir, 'otherteam.token'),
          profiles: ['dev', 'extra'],
          scopes: ['submit', 'read:own'],
        },
        submitbot: { tokenSha256: sha(T.submitbot).toString('hex'), profiles: ['dev'], scopes: ['submit'] },
        opsteam: { tokenEnv: 'MARSIGN_T_SCOPE_OPS', scopes: ['read:all'] },
        rootadmin: { tokenEnv: 'MARSIGN_T_SCOPE_ADMIN', scopes: ['admin'] },
      },
    });
    server = await startServer(cfg);
    worker = spawnWorker(cfg);
    await worker.ready();
  });

  after(async () => {
    if (worker?.alive) worker.proc.kill('SIGKILL');
    await legacyServer?.close();
    await server?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('401 without credentials, 403 with a token of no client', async () => {
    const paths = ['/releases', '/releases/x', '/overview', '/', '/queues', '/queues/api/queues'];
    for (const p of paths) {
      const r = await get(p);
      assert.equal(r.status, 401, p);
      assert.equal(r.body.error.code, 'AUTH_REQUIRED', p);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="marsign"');
    }
    assert.equal((await post({}, {})).status, 401);
    const wrong = { authorization: `Bearer ${tok()}` };
    for (const p of paths) assert.equal((await get(p, wrong)).body.error.code, 'AUTH_FORBIDDEN', p);
    // A client's sha256 from the config is not its token.
    const hashAsToken = { authorization: `Bearer ${sha(T.submitbot).toString('hex')}` };
    assert.equal((await post({}, hashAsToken)).status, 403);
  });

  test('a profile outside the client’s scope is 403 before anything is read or queued', async () => {
    const before = await redisKeys();
    const de = join(FIXTURE, 'de', 'complete.mar');
    const cases: [keyof typeof T, unknown, string][] = [
      ['automation', manifest('rel-x1', 'extra', 'de', de), 'AUTH_PROFILE'],
      // An unknown profile is out of scope too: the answer does not tell which profiles exist.
      ['automation', manifest('rel-x2', 'nightly', 'de', de), 'AUTH_PROFILE'],
      // Nor whether a path exists or is inside the roots.
      ['automation', manifest('rel-x3', 'extra', 'de', '/etc/passwd'), 'AUTH_PROFILE'],
      ['submitbot', manifest('rel-x4', 'extra', 'de', de), 'AUTH_PROFILE'],
      // No submit scope at all: refused by the route, before the body is looked at.
      ['opsteam', manifest('rel-x5', 'dev', 'de', de), 'AUTH_SCOPE'],
    ];
    for (const [who, doc, code] of cases) {
      const r = await post(doc, bearer(who));
      assert.equal(r.status, 403, `${who}: ${r.text}`);
      assert.equal(r.body.error.code, code);
      assert.equal(r.body.error.name, 'AuthError');
    }
    assert.deepEqual(await redisKeys(), before, 'nothing was written to Redis');
    assert.ok(!(await redisDump()).includes('rel-x'), 'no refused release id in Redis');
    assert.ok(!existsSync(join(dir, 'out')), 'no output directory was created');
    const counts = await server.svc.queue.counts();
    assert.equal(
      Object.values(counts.locales).reduce((a, b) => a + b, 0),
      0,
    );
    assert.match(server.logs(), /"client":"automation".*"msg":"scope denied"/);
  });

  test('a client sees only its own releases: another client’s id is 404 like an unknown one; re-submitting it is 409', async () => {
    const auto = copyRelease(join(dir, 'in-auto'), ['de']);
    const other = copyRelease(join(dir, 'in-other'), ['fr']);
    let r = await post(manifest('rel-auto-1', 'dev', 'de', auto.de!), bearer('automation'));
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body, { release: 'rel-auto-1', created: true, locales: ['de'], client: 'automation' });
    r = await post(manifest('rel-other-1', 'extra', 'fr', other.fr!), bearer('otherteam'));
    assert.equal(r.status, 201, r.text);
    r = await post(manifest('rel-bot-1', 'dev', 'de', auto.de!), bearer('submitbot'));
    assert.equal(r.status, 201, r.text);

    // The submitter is on the release and on each of its locale jobs.
    const q = server.svc.queue;
    assert.equal((await q.releases.getJob('rel-auto-1'))!.data.client, 'automation');
    assert.equal((await q.locales.getJob('rel-auto-1@de'))!.data.client, 'automation');
    assert.equal((await q.locales.getJob('rel-other-1@fr'))!.data.client, 'otherteam');
    assert.equal((await q.locales.getJob('rel-bot-1@de'))!.data.client, 'submitbot');

    for (const id of ['rel-auto-1', 'rel-other-1', 'rel-bot-1']) {
      await waitFor(`${id} to complete`, async () => {
        await assertPublicEndpointsAnonymous();
        const s = await get(`/releases/${id}`, bearer('rootadmin'));
        assert.notEqual(s.body.state, 'failed', s.text);
        return s.body.state === 'completed';
      });
    }

    r = await get('/releases/rel-auto-1', bearer('automation'));
    assert.equal(r.status, 200);
    assert.equal(r.body.client, 'automation');
    assert.equal(r.body.state, 'completed');
    // Another client's release and a release that does not exist answer the same, id aside.
    const hidden = await get('/releases/rel-auto-1', bearer('otherteam'));
    const unknown = await get('/releases/rel-none-1', bearer('otherteam'));
    assert.equal(hidden.status, 404);
    assert.equal(unknown.status, 404);
    assert.equal(hidden.text.replace('rel-auto-1', 'ID'), unknown.text.replace('rel-none-1', 'ID'));
    assert.equal((await get('/releases/rel-other-1', bearer('automation'))).status, 404);
    assert.equal((await get('/releases/rel-other-1', bearer('opsteam'))).status, 200);

    assert.deepEqual(ids(await get('/releases', bearer('automation'))), ['rel-auto-1']);
    assert.deepEqual(ids(await get('/releases', bearer('otherteam'))), ['rel-other-1']);
    const all = ['rel-auto-1', 'rel-bot-1', 'rel-other-1'];
    assert.deepEqual(ids(await get('/releases', bearer('opsteam'))), all);
    assert.deepEqual(ids(await get('/releases', bearer('rootadmin'))), all);

    // A submit-only client may submit, not read, even its own release; re-submitting it is fine.
    r = await get('/releases/rel-bot-1', bearer('submitbot'));
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'AUTH_SCOPE');
    assert.equal((await get('/releases', bearer('submitbot'))).status, 403);
    r = await post(manifest('rel-bot-1', 'dev', 'de', auto.de!), bearer('submitbot'));
    assert.equal(r.status, 200);
    assert.equal(r.body.created, false);

    // Another client re-submitting the id: 409, nothing about the release, nothing queued.
    const countsBefore = await q.counts();
    r = await post(manifest('rel-auto-1', 'dev', 'fr', other.fr!), bearer('otherteam'));
    assert.equal(r.status, 409, r.text);
    assert.deepEqual(Object.keys(r.body.error).sort(), ['code', 'message', 'name']);
    assert.equal(r.body.error.code, 'RELEASE_ID_TAKEN');
    for (const leak of ['automation', '"de"', 'completed', 'locales', 'dev'])
      assert.ok(!r.text.includes(leak), `409 tells ${leak}: ${r.text}`);
    assert.deepEqual(await q.counts(), countsBefore);
    // Its owner, and an admin, get the usual "already exists".
    r = await post(manifest('rel-auto-1', 'dev', 'de', auto.de!), bearer('automation'));
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, {
      release: 'rel-auto-1',
      created: false,
      locales: ['de'],
      client: 'automation',
    });
    r = await post(manifest('rel-auto-1', 'extra', 'de', auto.de!), bearer('rootadmin'));
    assert.equal(r.status, 200);
    assert.equal(r.body.client, 'automation');
  });

  test('the dashboard and bull-board need read:all; bull-board actions need admin', async () => {
    const html = { accept: 'text/html' };
    for (const who of ['submitbot', 'automation'] as const) {
      for (const p of ['/', '/overview', '/dashboard.js', '/queues', '/queues/api/queues']) {
        const r = await get(p, { ...bearer(who), ...html });
        assert.equal(r.status, 403, `${who} ${p}`);
        assert.match(r.text, /read:all/);
      }
      const r = await get('/overview', bearer(who));
      assert.equal(r.body.error.code, 'AUTH_SCOPE');
      // A percent-encoded path reaches the same route and the same rule.
      assert.notEqual((await get('/%71ueues/api/queues', bearer(who))).status, 200);
      assert.notEqual((await get('/%6Fverview', bearer(who))).status, 200);
      // No dashboard session for a client that may not open it.
      const login = await get(`/?token=${T[who]}`);
      assert.equal(login.status, 403);
      assert.equal(login.headers.get('set-cookie'), null);
    }
    // read:all: the dashboard with a session cookie, bull-board to look, not to act.
    const login = await get(`/?token=${T.opsteam}`);
    assert.equal(login.status, 303);
    assert.equal(login.headers.get('location'), '/');
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    cookies.push(cookie.split('=')[1]!);
    assert.match(cookie, /^marsign_session=opsteam\.\d+\.[A-Za-z0-9_-]{43}$/);
    assert.equal((await get('/', { cookie, ...html })).status, 200);
    const overview = await get('/overview', { cookie });
    assert.equal(overview.status, 200);
    assert.ok(ids(overview).includes('rel-auto-1'));
    assert.equal((await get('/queues/api/queues', { cookie })).status, 200);
    assert.equal((await post({}, { cookie })).body.error.code, 'AUTH_SCOPE');
    const resume = (headers: Record<string, string>) =>
      api('/queues/api/queues/releases/resume', { method: 'PUT', headers });
    let r = await resume(bearer('opsteam'));
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'AUTH_SCOPE');
    assert.equal((await resume({ cookie })).status, 403);
    r = await resume(bearer('rootadmin'));
    assert.equal(r.status, 200, r.text);
  });

  test('marsign enqueue records cli:<user>; only read:all clients see that release', async () => {
    const input = copyRelease(join(dir, 'in-cli'), ['ja']);
    const path = join(dir, 'cli-release.json');
    writeFileSync(path, JSON.stringify(manifest('rel-cli-1', 'dev', 'ja', input.ja!)));
    const r = await runCli(['enqueue', path, '-c', cfg, '--json']);
    cliOutput.push(r.stdout, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    const user = `cli:${userInfo().username}`;
    assert.deepEqual(JSON.parse(r.stdout), {
      release: 'rel-cli-1',
      created: true,
      locales: ['ja'],
      client: user,
    });
    assert.equal((await server.svc.queue.locales.getJob('rel-cli-1@ja'))!.data.client, user);
    assert.equal((await get('/releases/rel-cli-1', bearer('automation'))).status, 404);
    const s = await get('/releases/rel-cli-1', bearer('opsteam'));
    assert.equal(s.status, 200);
    assert.equal(s.body.client, user);
    const st = await runCli(['status', 'rel-cli-1', '-c', cfg, '--json']);
    cliOutput.push(st.stdout, st.stderr);
    assert.equal(st.code, 0, st.stderr);
    assert.equal(JSON.parse(st.stdout).client, user);
  });

  test('a config with the single tokenEnv still works: one admin client named "default"', async () => {
    process.env[TOKEN_ENV] = T.legacy;
    const legacyDir = join(dir, 'legacy');
    const legacyCfg = writeConfig(legacyDir, redis.url, ['dev', 'extra']);
    legacyServer = await startServer(legacyCfg);
    const base = legacyServer.url;
    const auth = { authorization: `Bearer ${T.legacy}` };
    const input = copyRelease(join(legacyDir, 'in'), ['de']);
    const doc = {
      release: 'rel-legacy-1',
      profile: 'extra',
      locales: { de: { input: input.de!, output: join(legacyDir, 'out') } },
    };
    assert.equal((await post(doc, {}, base)).status, 401);
    let r = await post(doc, auth, base);
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.client, 'default');
    r = await api('/releases', { headers: auth }, base);
    assert.deepEqual(ids(r), ['rel-legacy-1']);
    assert.equal((await api('/queues/api/queues', { headers: auth }, base)).status, 200);
    assert.equal((await api('/overview', { headers: auth }, base)).status, 200);
    // The new server's clients mean nothing to the legacy one, and the other way round.
    assert.equal((await api('/releases', { headers: bearer('rootadmin') }, base)).status, 403);
    assert.equal((await get('/releases', auth)).status, 403);
    const login = await api(`/?token=${T.legacy}`, {}, base);
    assert.equal(login.status, 303);
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    cookies.push(cookie.split('=')[1]!);
    assert.equal((await api('/overview', { headers: { cookie } }, base)).status, 200);
  });

  test('no token, token hash, session secret or session cookie in any log or anywhere in Redis', async () => {
    const secrets: [string, string][] = [];
    for (const [name, t] of Object.entries(T)) {
      secrets.push([`${name} token`, t]);
      secrets.push([`${name} token sha256`, sha(t).toString('hex')]);
      secrets.push([`${name} token sha256 (base64)`, sha(t).toString('base64')]);
    }
    cookies.forEach((c, i) => secrets.push([`session cookie ${i}`, c]));
    assert.ok(cookies.length >= 2);
    const places: [string, string][] = [
      ['server log', server.logs()],
      ['legacy server log', legacyServer?.logs() ?? ''],
      ['worker log', worker.log],
      ['CLI output', cliOutput.join('\n')],
      ['Redis', await redisDump()],
    ];
    // The places are real: they hold what this run did.
    assert.match(places[0]![1], /"client":"automation"[^\n]*"msg":"release submitted"/);
    assert.match(places[2]![1], /locale completed/);
    assert.match(places[4]![1], /rel-auto-1/);
    for (const [where, text] of places)
      for (const [what, value] of secrets)
        assert.ok(!text.includes(value), `${what} appears in the ${where}`);
  });
});
