/**
 * The service end to end on a private Redis: `marsign worker` processes, the HTTP server, `enqueue`
 * and `status` as a user runs them, outputs checked with openssl and osslsigncode.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readMar } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { PROJECT_ROOT, runCli, tempDir } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { checkSignedOutput } from '../pipeline/_support.js';
import {
  FIXTURE,
  TOKEN_ENV,
  assertOutputTree,
  copyRelease,
  distinctSigned,
  readManifest,
  spawnWorker,
  startServer,
  waitFor,
  writeConfig,
  type RunningServer,
  type WorkerProcess,
} from './harness.js';

const EIGHT = ['en-US', 'de', 'fr', 'ja', 'es-ES', 'it', 'pl', 'ru'];

describe('service', { skip: REDIS_SKIP, timeout: 170_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let cfg: string;
  let server: RunningServer;
  const token = randomBytes(24).toString('hex');
  const workers: WorkerProcess[] = [];
  const auth = { authorization: `Bearer ${token}` };

  const api = async (
    path: string,
    init: RequestInit = {},
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON bodies of many shapes
  ): Promise<{ status: number; body: any; headers: Headers }> => {
    const res = await fetch(server.url + path, { redirect: 'manual', ...init });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // HTML or text
    }
    return { status: res.status, body, headers: res.headers };
  };
  const post = (doc: unknown, headers: Record<string, string> = auth) =>
    api('/releases', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(doc),
    });
  const release = async (id: string): Promise<ReleaseStatus> =>
    (await api(`/releases/${id}`, { headers: auth })).body as ReleaseStatus;
  const finished = (id: string, timeoutMs = 90_000) =>
    waitFor(
      `release ${id} to finish`,
      async () => {
        const s = await release(id);
        return s.locales?.every((l) => l.state === 'completed' || l.state === 'failed') &&
          (s.state === 'completed' || s.state === 'failed')
          ? s
          : undefined;
      },
      timeoutMs,
      200,
    );
  const verifyAll = async (s: ReleaseStatus, only?: string[]) => {
    const scratch = tempDir();
    for (const l of s.locales) {
      if (only && !only.includes(l.locale)) continue;
      const m = readManifest(l.output);
      const signed = m.entries.filter((e) => e.action !== 'passthrough').map((e) => e.name);
      assert.ok(signed.length > 0, `${l.locale} has signable entries`);
      await checkSignedOutput(l.input, l.output, { signed, dir: scratch });
    }
  };

  before(async () => {
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-service-'));
    cfg = writeConfig(dir, redis.url, ['dev', 'kill', 'restart', 'bad', 'term']);
    process.env[TOKEN_ENV] = token;
    server = await startServer(cfg);
    workers.push(spawnWorker(cfg), spawnWorker(cfg));
    await Promise.all(workers.map((w) => w.ready()));
  });

  after(async () => {
    for (const w of workers) if (w.alive) w.proc.kill('SIGKILL');
    await server?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('bad manifests: clear 400s and CLI errors, nothing enqueued', async () => {
    const ok = {
      release: 'bad-1',
      profile: 'dev',
      locales: { de: { input: join(FIXTURE, 'de', 'complete.mar'), output: join(dir, 'bad-out') } },
    };
    let r = await post({ ...ok, locales: [] });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'RELEASE_SCHEMA');
    r = await post({
      ...ok,
      locales: { de: { input: `${FIXTURE}/de/../de/complete.mar`, output: join(dir, 'x') } },
    });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'RELEASE_PATH_TRAVERSAL');
    r = await post({ ...ok, locales: { de: { input: '/etc/passwd', output: join(dir, 'x') } } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'RELEASE_PATH_ESCAPE');
    symlinkSync('/etc/hostname', join(dir, 'sneaky.mar'));
    r = await post({ ...ok, locales: { de: { input: join(dir, 'sneaky.mar'), output: join(dir, 'x') } } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'RELEASE_PATH_ESCAPE');
    r = await post({ ...ok, locales: { de: { input: join(dir, 'missing.mar'), output: join(dir, 'x') } } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'RELEASE_INPUT_MISSING');
    r = await post({ ...ok, profile: 'nope' });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'RELEASE_UNKNOWN_PROFILE');
    r = await api('/releases', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"release": ',
    });
    assert.equal(r.status, 400);

    const bad = join(dir, 'bad-release.json');
    writeFileSync(
      bad,
      JSON.stringify({
        release: 'bad-2',
        profile: 'dev',
        output: 'out',
        locales: { de: '../escape/complete.mar' },
      }),
    );
    const cli = await runCli(['enqueue', bad, '-c', cfg]);
    assert.equal(cli.code, 2);
    assert.match(cli.stderr, /^marsign: RELEASE_PATH_TRAVERSAL: locales\.de\.input/m);

    r = await api('/releases', { headers: auth });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.releases, []);
    const metrics = (await api('/metrics')).body as string;
    assert.doesNotMatch(metrics, /marsign_jobs\{queue="locales",state="\w+"\} [1-9]/);
  });

  test('auth: 401 without a token, 403 with a wrong one, on the API and /queues; health is public', async () => {
    const wrong = { authorization: 'Bearer not-the-token-at-all' };
    // The error body docs/OPERATIONS.md promises: { error: { name, code, message } }.
    for (const path of ['/releases', '/queues/api/queues']) {
      const r = await api(path);
      assert.equal(r.status, 401, path);
      assert.deepEqual(Object.keys(r.body.error).sort(), ['code', 'message', 'name'], path);
      assert.equal(r.body.error.name, 'AuthError', path);
      assert.equal(r.body.error.code, 'AUTH_REQUIRED', path);
    }
    const denied = await api('/releases', { headers: wrong });
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error.name, 'AuthError');
    assert.equal(denied.body.error.code, 'AUTH_FORBIDDEN');
    assert.equal((await post({}, {})).status, 401);
    assert.equal((await post({}, wrong)).status, 403);
    assert.equal((await api('/releases/x', { headers: wrong })).status, 403);
    assert.equal((await api('/queues')).status, 401);
    assert.equal((await api('/queues/api/queues')).status, 401);
    assert.equal((await api('/queues', { headers: wrong })).status, 403);
    assert.equal((await api('/queues?token=wrong')).status, 403);
    assert.equal((await api('/', { headers: { accept: 'text/html' } })).status, 401);
    assert.equal((await api('/queues', { headers: auth })).status, 200);
    const basic = { authorization: `Basic ${Buffer.from(`ops:${token}`).toString('base64')}` };
    assert.equal((await api('/queues/api/queues', { headers: basic })).status, 200);

    // A browser: ?token= once → HttpOnly cookie and a redirect that drops the token from the URL.
    const login = await api(`/queues?token=${token}`);
    assert.equal(login.status, 303);
    assert.equal(login.headers.get('location'), '/queues');
    const setCookie = login.headers.get('set-cookie') ?? '';
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.ok(!setCookie.includes(token), 'the cookie does not hold the token');
    const cookie = setCookie.split(';')[0]!;
    const board = await api('/queues', { headers: { cookie } });
    assert.equal(board.status, 200);
    assert.match(String(board.body), /<html/i);
    const queues = await api('/queues/api/queues', { headers: { cookie } });
    assert.equal(queues.status, 200);
    assert.deepEqual((queues.body.queues as { name: string }[]).map((q) => q.name).sort(), [
      'locales',
      'releases',
    ]);
    assert.equal((await api('/releases', { headers: { cookie: 'marsign_session=forged' } })).status, 403);

    assert.equal((await api('/__lbheartbeat__')).status, 200);
    const version = await api('/__version__');
    assert.equal(version.status, 200);
    assert.equal(typeof version.body.version, 'string');
    // Only what is known: the checkout's real commit (tests run from sources), no placeholders.
    const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: PROJECT_ROOT, encoding: 'utf8' });
    if (head.status === 0) assert.equal(version.body.commit, head.stdout.trim());
    else assert.ok(!('commit' in version.body), JSON.stringify(version.body));
    assert.doesNotMatch(JSON.stringify(version.body), /unknown|github\.com\/mozilla\/marsign/);
    const hb = await api('/__heartbeat__');
    assert.equal(hb.status, 200, JSON.stringify(hb.body));
    assert.equal(hb.body.checks.redis.status, 'ok');
    assert.equal(hb.body.checks.cache_dir.status, 'ok');
    assert.equal(hb.body.checks['canary:dev'].status, 'ok', JSON.stringify(hb.body.checks['canary:dev']));
    assert.deepEqual(hb.body.checks.workers.detail.length, 2);

    assert.ok(!server.logs().includes(token), 'the token never reaches the logs');
    assert.match(server.logs(), /\[Redacted\]/);
  });

  test('enqueue → two worker processes: every output verifies, no entry signed twice', async () => {
    const rel = join(dir, 'r1');
    const inputs = copyRelease(rel, EIGHT);
    const manifest = join(rel, 'release.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        release: 'two-workers',
        profile: 'dev',
        output: join(dir, 'out1'),
        locales: Object.fromEntries(EIGHT.map((l) => [l, `${l}/complete.mar`])),
      }),
    );
    const r = await runCli(['enqueue', manifest, '-c', cfg, '--wait', '--json'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    const final = JSON.parse(r.stdout) as ReleaseStatus;
    assert.equal(final.state, 'completed');
    assert.equal(final.locales.length, 8);
    assert.deepEqual(final.locales.map((l) => l.input).sort(), Object.values(inputs).sort());
    assertOutputTree(join(dir, 'out1'), EIGHT);
    await verifyAll(final);

    const signOps = final.locales.reduce((a, l) => a + l.result!.signOperations, 0);
    assert.equal(
      signOps,
      await distinctSigned(final),
      'each distinct PE signed exactly once across both workers',
    );
    const byWorker = new Set(final.locales.map((l) => l.result!.worker));
    assert.equal(byWorker.size, 2, `both workers took locales: ${[...byWorker].join(', ')}`);
    assert.equal(
      final.totals.hits + final.totals.misses,
      final.locales.reduce((a, l) => a + l.result!.hits + l.result!.misses, 0),
    );

    // The workers' published counters agree (what /metrics exports). Each worker publishes its own
    // counters every few seconds, so wait until both workers' figures are in, not just the signer's.
    const metrics = await waitFor(
      'worker counters in /metrics',
      async () => {
        const m = (await api('/metrics')).body as string;
        const v = /^marsign_sign_operations_total (\d+)/m.exec(m);
        const n = /^marsign_locale_duration_seconds_count (\d+)/m.exec(m);
        return v && Number(v[1]) === signOps && n && Number(n[1]) === 8 ? m : undefined;
      },
      10_000,
      250,
    );
    assert.match(metrics, /^marsign_jobs\{queue="locales",state="completed"\} 8$/m);
    assert.match(metrics, /^marsign_locale_duration_seconds_count 8$/m);
    assert.match(metrics, /^marsign_workers 2$/m);
    assert.match(metrics, /^marsign_cache_hits_total \d+$/m);

    // Re-submitting the same release is a no-op (job ids are release@locale).
    const again = await post({
      release: 'two-workers',
      profile: 'dev',
      output: join(dir, 'out1'),
      locales: Object.fromEntries(EIGHT.map((l) => [l, join(rel, l, 'complete.mar')])),
    });
    assert.equal(again.status, 200);
    assert.equal(again.body.created, false);
    const counts = (await api('/metrics')).body as string;
    assert.match(counts, /^marsign_jobs\{queue="locales",state="completed"\} 8$/m);

    const st = await runCli(['status', '-c', cfg]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /two-workers\s+completed\s+8\/8/);
  });

  test('a corrupt MAR fails its locale at once with a typed error; the release fails; other locales are signed', async () => {
    const rel = join(dir, 'r2');
    const inputs = copyRelease(rel, ['en-US', 'de', 'fr']);
    // Corrupt the compressed bytes of one signable entry: the MAR still parses (enqueue accepts it),
    // signing it cannot succeed.
    const src = await FileSource.open(inputs.fr!);
    const info = await readMar(src);
    await src.close();
    const victim = info.entries.find((e) => /\.(exe|dll)$/.test(e.name))!;
    const fh = await open(inputs.fr!, 'r+');
    await fh.write(Buffer.alloc(Math.min(64, victim.size - 20), 0x55), 0, undefined, victim.offset + 10);
    await fh.close();

    const doc = { release: 'corrupt-1', profile: 'bad', output: join(dir, 'out2'), locales: inputs };
    const r = await post(doc);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.created, true);
    const s = await finished('corrupt-1');
    assert.equal(s.state, 'failed');
    const fr = s.locales.find((l) => l.locale === 'fr')!;
    assert.equal(fr.state, 'failed');
    assert.equal(fr.attempts, 1, 'a format error is not retried');
    assert.ok(fr.error, 'the typed error is visible');
    assert.notEqual(fr.error.code, 'INTERNAL', JSON.stringify(fr.error));
    assert.match(fr.error.name, /FormatError|PolicyError/);
    assert.equal(s.error?.code, fr.error.code);
    // The failing entry is named (issue 11 item 7): in the message and in details.entry.
    assert.ok(fr.error.message.includes(victim.name), fr.error.message);
    assert.equal(fr.error.details?.entry, victim.name);
    for (const l of s.locales.filter((x) => x.locale !== 'fr')) assert.equal(l.state, 'completed', l.locale);
    await verifyAll(s, ['en-US', 'de']);

    const cli = await runCli(['status', 'corrupt-1', '-c', cfg, '--json']);
    assert.equal(cli.code, 0, cli.stderr);
    const viaCli = JSON.parse(cli.stdout) as ReleaseStatus;
    assert.equal(viaCli.state, 'failed');
    assert.equal(viaCli.locales.find((l) => l.locale === 'fr')!.error!.code, fr.error.code);
    const human = await runCli(['status', 'corrupt-1', '-c', cfg]);
    assert.match(human.stdout, new RegExp(`fr\\s+failed.*${fr.error.code}`));
    assert.ok(human.stdout.includes(victim.name), human.stdout);
    // `enqueue --wait` on a release that failed exits non-zero (re-submission waits on the existing one).
    const manifest = join(rel, 'release.json');
    writeFileSync(manifest, JSON.stringify(doc));
    const waited = await runCli(['enqueue', manifest, '-c', cfg, '--wait']);
    assert.equal(waited.code, 2, waited.stderr);
    assert.match(waited.stderr, /already exists/);
    assert.match(waited.stdout, /release corrupt-1 \(profile bad, by default\): failed/);
    const watched = await runCli(['status', 'corrupt-1', '-c', cfg, '--watch', '--interval', '100']);
    assert.equal(watched.code, 0, watched.stderr);
    assert.match(watched.stdout, /: failed/);
  });

  test('SIGKILL one worker mid-release: the release completes, outputs verify, no partial files, cache intact', async () => {
    const rel = join(dir, 'r3');
    copyRelease(rel, EIGHT);
    const manifest = join(rel, 'release.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        release: 'killed',
        profile: 'kill',
        output: join(dir, 'out3'),
        locales: Object.fromEntries(EIGHT.map((l) => [l, `${l}/complete.mar`])),
      }),
    );
    const victim = workers[0]!;
    const r = await runCli(['enqueue', manifest, '-c', cfg]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      'a locale active on the victim',
      async () => {
        const s = await release('killed');
        return s.locales.some((l) => l.state === 'active' && l.worker === victim.id) || undefined;
      },
      60_000,
      20,
    );
    victim.proc.kill('SIGKILL');
    await victim.exited;
    const killedAt = Date.now();
    const s = await finished('killed', 120_000);
    console.log(`# release completed ${Date.now() - killedAt} ms after the SIGKILL`);
    assert.equal(s.state, 'completed', JSON.stringify(s.locales.map((l) => [l.locale, l.state, l.error])));
    assertOutputTree(join(dir, 'out3'), EIGHT);
    await verifyAll(s);
    const cache = await runCli(['cache', 'verify', '--config', cfg, '--json']);
    assert.equal(cache.code, 0, cache.stderr + cache.stdout);
    const report = JSON.parse(cache.stdout) as { checked: number; bad: unknown[] };
    assert.ok(report.checked > 0);
    assert.deepEqual(report.bad, []);
    // A fresh worker replaces the dead one for the next scenarios.
    const w = spawnWorker(cfg);
    workers.push(w);
    await w.ready();
  });

  test('Redis restarted mid-release: workers reconnect and the release completes', async () => {
    const locales = EIGHT.slice(0, 6);
    const rel = join(dir, 'r4');
    copyRelease(rel, locales);
    const manifest = join(rel, 'release.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        release: 'restarted',
        profile: 'restart',
        output: join(dir, 'out4'),
        locales: Object.fromEntries(locales.map((l) => [l, `${l}/complete.mar`])),
      }),
    );
    const r = await runCli(['enqueue', manifest, '-c', cfg]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      'a locale active',
      async () => {
        const s = await release('restarted');
        return s.locales.some((l) => l.state === 'active') || undefined;
      },
      60_000,
      20,
    );
    await redis.restart(500);
    const s = await finished('restarted', 120_000);
    assert.equal(s.state, 'completed', JSON.stringify(s.locales.map((l) => [l.locale, l.state, l.error])));
    assertOutputTree(join(dir, 'out4'), locales);
    await verifyAll(s);
    assert.equal(workers.filter((w) => w.alive).length, 2, 'workers survived the restart');
  });

  test('SIGTERM: a worker stops taking jobs, finishes in-flight work and exits 0', async () => {
    const live = workers.filter((w) => w.alive);
    assert.ok(live.length >= 1);
    const rel = join(dir, 'r5');
    const inputs = copyRelease(rel, ['en-US', 'de']);
    assert.equal(
      (await post({ release: 'terminated', profile: 'term', output: join(dir, 'out5'), locales: inputs }))
        .status,
      201,
    );
    const active = await waitFor(
      'a locale active',
      async () => {
        const s = await release('terminated');
        const a = s.locales.filter((l) => l.state === 'active');
        return a.length > 0 ? a.map((l) => l.locale) : undefined;
      },
      60_000,
      20,
    );
    for (const w of live) w.proc.kill('SIGTERM');
    const codes = await Promise.all(live.map((w) => w.exited));
    assert.deepEqual(
      codes,
      live.map(() => 0),
      live.map((w) => w.log.slice(-3000)).join('\n----\n'),
    );
    for (const w of live) assert.match(w.log, /"msg":"worker stopped"/);
    // In-flight locales were finished, not abandoned: completed on their first attempt, outputs valid.
    const s = await release('terminated');
    for (const l of s.locales.filter((x) => active.includes(x.locale))) {
      assert.equal(l.state, 'completed', l.locale);
      assert.equal(l.attempts, 1, l.locale);
    }
    await verifyAll(s, active);
    // Their snapshots are gone at once (a SIGKILLed worker's only expires with its TTL).
    const overview = await api('/overview', { headers: auth });
    const ids = (overview.body.workers as { id: string }[]).map((w) => w.id);
    for (const w of live) assert.ok(!ids.includes(w.id!), `${w.id} removed its snapshot`);
  });
});
