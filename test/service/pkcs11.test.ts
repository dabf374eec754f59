/**
 * The service with keys in a SoftHSM2 token: two `marsign worker` processes (each: main thread for MAR
 * signing + a pool thread for Authenticode, each with its own token session) sign a release; the
 * heartbeat reports each profile's token; a profile whose key is missing fails its locales once, with
 * the typed error, not retried; and the PIN appears in no log, no Redis key or value, no API answer.
 */
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { tempDir } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { SOFTHSM_SKIP, SoftHsm } from '../helpers/softhsm.js';
import { checkSignedOutput } from '../pipeline/_support.js';
import {
  FIXTURE,
  KEYS,
  TOKEN_ENV,
  copyRelease,
  readManifest,
  spawnWorker,
  startServer,
  waitFor,
  type RunningServer,
  type WorkerProcess,
} from './harness.js';

const PIN = '55-token-PIN-never-logged-31';
const TOKEN = 'marsign-service';

describe('service with PKCS#11 token keys', { skip: REDIS_SKIP ?? SOFTHSM_SKIP, timeout: 170_000 }, () => {
  const dir = tempDir('marsign-svc-p11-');
  const hsm = REDIS_SKIP || SOFTHSM_SKIP ? (undefined as never as SoftHsm) : new SoftHsm();
  let redis: TestRedis;
  let server: RunningServer;
  let cfg: string;
  const api = randomBytes(24).toString('hex');
  const workers: WorkerProcess[] = [];
  const auth = { authorization: `Bearer ${api}` };

  const get = async (path: string, headers: Record<string, string> = auth) => {
    const res = await fetch(server.url + path, { headers });
    return { status: res.status, text: await res.text() };
  };
  const finished = (id: string) =>
    waitFor(
      `release ${id}`,
      async () => {
        const s = JSON.parse((await get(`/releases/${id}`)).text) as ReleaseStatus;
        return s.state === 'completed' || s.state === 'failed' ? s : undefined;
      },
      120_000,
      250,
    );

  before(async () => {
    const der = (name: string): string => {
      const p = join(dir, `${name}.der`);
      writeFileSync(p, new X509Certificate(readFileSync(join(KEYS, `${name}.cert.pem`))).raw);
      return p;
    };
    const t = { token: TOKEN, pin: PIN };
    hsm.initToken(TOKEN, PIN);
    hsm.importKey(join(KEYS, 'codesign.key.pem'), { ...t, label: 'codesign', id: '01' });
    hsm.importCert(der('codesign'), { ...t, label: 'codesign', id: '01' });
    hsm.importCert(der('ca'), { ...t, label: 'ca', id: '02' });
    hsm.importKey(join(KEYS, 'mar.key.pem'), { ...t, label: 'mar', id: '03' });
    redis = await TestRedis.start();
    const key = (object: string) => `pkcs11:token=${TOKEN};object=${object}`;
    const profile = (codesign: string) => ({
      authenticode: {
        key: key(codesign),
        pinEnv: 'MARSIGN_TEST_PIN',
        digest: 'sha256',
        programName: 'p11 service',
      },
      mar: { keys: [key('mar')], pinEnv: 'MARSIGN_TEST_PIN', algorithm: 'sha384' },
    });
    mkdirSync(join(dir, 'cache'));
    cfg = join(dir, 'marsign.config.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        cache: { dir: join(dir, 'cache') },
        redis: { url: redis.url, prefix: `p11${randomBytes(3).toString('hex')}` },
        server: { tokenEnv: TOKEN_ENV, roots: [dir, FIXTURE] },
        pkcs11: { module: hsm.module },
        profiles: { dev: profile('codesign'), nokey: profile('absent') },
      }),
    );
    // Workers inherit this process's environment: the token directory and the PIN.
    process.env.SOFTHSM2_CONF = hsm.conf;
    process.env.MARSIGN_TEST_PIN = PIN;
    process.env[TOKEN_ENV] = api;
    server = await startServer(cfg);
    workers.push(spawnWorker(cfg), spawnWorker(cfg));
    await Promise.all(workers.map((w) => w.ready()));
  });

  after(async () => {
    for (const w of workers) if (w.alive) w.proc.kill('SIGKILL');
    await server?.close();
    await redis?.stop();
  });

  test('two workers sign a release with token keys; outputs verify', async () => {
    const inputs = copyRelease(join(dir, 'rel'), ['en-US', 'de', 'fr', 'ja']);
    const res = await fetch(`${server.url}/releases`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ release: 'p11-1', profile: 'dev', output: join(dir, 'out'), locales: inputs }),
    });
    assert.equal(res.status, 201, await res.text());
    const s = await finished('p11-1');
    assert.equal(s.state, 'completed', JSON.stringify(s));
    assert.equal(new Set(s.locales.map((l) => l.worker)).size >= 1, true);
    for (const l of s.locales) {
      const m = readManifest(l.output);
      const signed = m.entries.filter((e) => e.action !== 'passthrough').map((e) => e.name);
      await checkSignedOutput(l.input, l.output, { signed, dir: tempDir() });
    }
  });

  test('a missing token key fails its locale once with PKCS11_KEY_NOT_FOUND (not retried)', async () => {
    const inputs = copyRelease(join(dir, 'rel2'), ['de']);
    const res = await fetch(`${server.url}/releases`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        release: 'p11-2',
        profile: 'nokey',
        output: join(dir, 'out2'),
        locales: inputs,
      }),
    });
    assert.equal(res.status, 201);
    const s = await finished('p11-2');
    assert.equal(s.state, 'failed');
    const de = s.locales[0]!;
    assert.equal(de.attempts, 1, 'a configuration error is not retried');
    assert.equal(de.error?.code, 'PKCS11_KEY_NOT_FOUND', JSON.stringify(de.error));
    assert.equal(de.error?.name, 'ConfigError');
  });

  test('heartbeat reports each profile token: reachable, logged in, key present (dev) / key absent (nokey)', async () => {
    const hb = await waitFor('token checks in the heartbeat', async () => {
      const r = await get('/__heartbeat__', {});
      const body = JSON.parse(r.text) as { checks: Record<string, { status: string; detail: unknown }> };
      return body.checks['token:dev'] && body.checks['token:nokey'] ? body : undefined;
    });
    assert.equal(hb.checks['token:dev']!.status, 'ok', JSON.stringify(hb.checks['token:dev']));
    const detail = hb.checks['token:dev']!.detail as { worker: string; tokens: Record<string, unknown>[] }[];
    assert.equal(detail.length, 2, 'both workers report');
    for (const w of detail)
      for (const t of w.tokens) {
        assert.equal(t.reachable, true);
        assert.equal(t.loggedIn, true);
        assert.equal(t.keyPresent, true);
      }
    assert.equal(hb.checks['token:nokey']!.status, 'failed');
    assert.match(JSON.stringify(hb.checks['token:nokey']!.detail), /PKCS11_KEY_NOT_FOUND/);
  });

  test('the PIN is in no worker or server log, no Redis key or value, no API answer or metric', async () => {
    const seen: string[] = [...workers.map((w) => w.log), server.logs()];
    for (const path of [
      '/metrics',
      '/overview',
      '/releases',
      '/releases/p11-1',
      '/releases/p11-2',
      '/__heartbeat__',
    ])
      seen.push((await get(path)).text);
    const c = new Redis(redis.url);
    try {
      let cursor = '0';
      let keys = 0;
      do {
        const [next, batch] = await c.scan(cursor, 'COUNT', 500);
        cursor = next;
        for (const k of batch) {
          keys++;
          seen.push(k);
          const type = await c.type(k);
          if (type === 'string') seen.push((await c.get(k)) ?? '');
          else if (type === 'hash') seen.push(JSON.stringify(await c.hgetall(k)));
          else if (type === 'list') seen.push(JSON.stringify(await c.lrange(k, 0, -1)));
          else if (type === 'set') seen.push(JSON.stringify(await c.smembers(k)));
          else if (type === 'zset')
            seen.push(JSON.stringify(await c.call('ZRANGE', k, '0', '-1', 'WITHSCORES')));
          else if (type === 'stream') seen.push(JSON.stringify(await c.xrange(k, '-', '+')));
          else assert.fail(`unexpected Redis type ${type} of ${k}`);
        }
      } while (cursor !== '0');
      assert.ok(keys > 10, `Redis holds the run (${keys} keys)`);
    } finally {
      c.disconnect();
    }
    const all = seen.join('\n');
    assert.ok(all.includes('pkcs11:token='), 'the token URI is reported (so the grep looked at real data)');
    assert.ok(!all.includes(PIN), 'PIN leaked');
  });
});
