/**
 * Issue 11 items 4, 5 and 8: the operator's figures against a measured run. A worker signing a release
 * big enough to take several seconds reports a plausible pool utilisation (metrics, /overview, its
 * heartbeat); a locale's attempts are its real starts (1 while it runs, 2 after its worker was
 * SIGKILLed and it ran again); the killed worker's heartbeat goes stale and grows old, and its job
 * shows `stalled` until another worker's stalled-job check takes it; /metrics answers 200 with
 * `marsign_redis_up 0` when Redis is down.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { BullReleaseQueue } from '../../src/queue/bullmq.js';
import { redisSettings } from '../../src/queue/connection.js';
import type { WorkerHeartbeat } from '../../src/queue/heartbeat.js';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { runCli } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { BZ2, buildMar } from '../pipeline/_support.js';
import {
  TOKEN_ENV,
  WorkerProcess,
  spawnWorker,
  startServer,
  waitFor,
  writeConfig,
  type RunningServer,
} from './harness.js';

const LOCALES = ['aa', 'bb', 'cc'];
/** Distinct PEs per locale, each with a random payload: every one is a real signing task. */
const PES = 8;
const PAYLOAD = 1536 * 1024;

/**
 * A worker whose heartbeat is quick (300 ms: stale after 2 s) and whose BullMQ lock is long, so a killed
 * worker's job stays `active` in BullMQ for a while: long enough to see it shown as stalled.
 */
function spawnOperatorWorker(config: string): WorkerProcess {
  return spawnWorker(config, ['--heartbeat-interval', '300', '--canary-interval', '0'], {
    concurrency: 1,
    threads: 2,
    lockDuration: 8000,
  });
}

/** User + system CPU seconds of a process so far (Linux /proc). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A gauge's value for one worker from the Prometheus text, or undefined. */
function gauge(text: string, name: string, worker: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{worker="${worker}"`));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

describe('operator figures from a measured run', { skip: REDIS_SKIP, timeout: 240_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let cfg: string;
  let queue: BullReleaseQueue;
  let server: RunningServer;
  const workers: WorkerProcess[] = [];
  const token = randomBytes(24).toString('hex');

  before(async () => {
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-operator-'));
    cfg = writeConfig(dir, redis.url, ['dev']);
    process.env[TOKEN_ENV] = token;
    queue = new BullReleaseQueue(redisSettings(await loadConfig(cfg)));
    server = await startServer(cfg);
    const rel = join(dir, 'rel');
    for (const l of LOCALES) {
      mkdirSync(join(rel, l), { recursive: true });
      const files = Array.from({ length: PES }, (_, i) => ({
        name: `bin/app${i}.exe`,
        data: buildPe({ arch: 'x64', name: `${l}-${i}`, payload: randomBytes(PAYLOAD) }),
        codec: BZ2,
      }));
      await buildMar(join(rel, l, 'complete.mar'), [
        ...files,
        { name: 'readme.txt', data: Buffer.from(`locale ${l}\n`), codec: BZ2 },
      ]);
    }
    writeFileSync(
      join(rel, 'release.json'),
      JSON.stringify({
        release: 'measured',
        profile: 'dev',
        output: join(dir, 'out'),
        locales: Object.fromEntries(LOCALES.map((l) => [l, `${l}/complete.mar`])),
      }),
    );
  });

  after(async () => {
    for (const w of workers) if (w.alive) w.proc.kill('SIGKILL');
    await server?.close().catch(() => undefined);
    await queue?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const status = async (): Promise<ReleaseStatus> => (await queue.get('measured'))!;
  const heartbeat = async (id: string): Promise<WorkerHeartbeat | undefined> =>
    (await queue.workers()).find((w) => w.id === id);

  test('utilisation and attempts while signing; a killed worker goes stale, its job stalled; re-run counts 2 starts', async () => {
    const w1 = spawnOperatorWorker(cfg);
    workers.push(w1);
    await w1.ready();
    const id1 = w1.id!;
    const r = await runCli(['enqueue', join(dir, 'rel', 'release.json'), '-c', cfg]);
    assert.equal(r.code, 0, r.stderr);

    // The first locale running: it has started once (BullMQ's attemptsMade would say 0 here).
    const running = await waitFor(
      'a locale active on the worker',
      async () => (await status()).locales.find((l) => l.state === 'active' && l.worker === id1),
      60_000,
      50,
    );
    assert.equal(running.attempts, 1, JSON.stringify(running));

    // Pool utilisation from its measured busy time, once it has signed for a while: plausible, not ~0.
    const metrics = await waitFor(
      'pool utilisation above 0.2 in /metrics',
      async () => {
        const text = await (await fetch(`${server.url}/metrics`)).text();
        const u = gauge(text, 'marsign_pool_utilisation', id1);
        return u !== undefined && u > 0.2 ? text : undefined;
      },
      60_000,
      250,
    );
    const u = gauge(metrics, 'marsign_pool_utilisation', id1)!;
    assert.ok(u <= 1, `utilisation ${u} is a fraction`);
    // For the record: the figure beside the worker process's own CPU time over the same seconds.
    const cpu0 = cpuSeconds(w1.proc.pid!);
    const t0 = Date.now();
    await new Promise((res) => setTimeout(res, 2000));
    const later = gauge(await (await fetch(`${server.url}/metrics`)).text(), 'marsign_pool_utilisation', id1);
    const cpuShare = (cpuSeconds(w1.proc.pid!) - cpu0) / ((Date.now() - t0) / 1000) / 2;
    console.log(
      `# pool utilisation ${u.toFixed(3)}, 2 s later ${later?.toFixed(3)}; worker CPU over those 2 s: ${cpuShare.toFixed(3)} of 2 cores`,
    );
    assert.match(metrics, /^marsign_redis_up 1$/m);
    assert.match(metrics, /^marsign_pool_busy_seconds_total \d/m);
    // The worker's memory: its resident size and its pipeline's budget (what it leases: test/pipeline/budget.test.ts).
    const rss = Number(
      new RegExp(`^marsign_worker_memory_bytes\\{worker="${id1}",kind="rss"\\} (\\S+)$`, 'm').exec(
        metrics,
      )?.[1],
    );
    assert.ok(rss > 10e6 && rss < 4e9, `worker rss ${rss}`);
    assert.match(
      metrics,
      new RegExp(`^marsign_worker_memory_bytes\\{worker="${id1}",kind="budget"\\} 536870912$`, 'm'),
    );
    assert.match(
      metrics,
      new RegExp(`^marsign_worker_memory_bytes\\{worker="${id1}",kind="peak_leased"\\} \\d`, 'm'),
    );
    assert.match(
      metrics,
      new RegExp(`^marsign_worker_memory_bytes\\{worker="${id1}",kind="hot"\\} \\d`, 'm'),
    );
    assert.match(
      metrics,
      new RegExp(`^marsign_worker_heartbeat_age_seconds\\{worker="${id1}",state="alive"\\} `, 'm'),
    );
    const overview = (await (
      await fetch(`${server.url}/overview`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as { utilisation: number; heartbeats: WorkerHeartbeat[] };
    assert.ok(overview.utilisation > 0.2, `dashboard utilisation ${overview.utilisation}`);
    const beat = overview.heartbeats.find((h) => h.id === id1)!;
    assert.equal(beat.state, 'alive');
    assert.equal(beat.threads, 2);
    assert.ok(beat.utilisation > 0, `heartbeat utilisation ${beat.utilisation}`);
    assert.ok(beat.active.length === 1, JSON.stringify(beat));

    // The ETA is measured from byte rates: each queued locale's input size was recorded at submit, and
    // once bytes were done there is a figure (before that: none, not a guess).
    const queuedJob = await queue.locales.getJob('measured@cc');
    assert.equal(queuedJob?.data.inputBytes, statSync(join(dir, 'rel', 'cc', 'complete.mar')).size);
    const eta = await waitFor(
      'a measured ETA',
      async () => {
        const s = await status();
        return s.state === 'running' && s.etaMs !== null && s.etaMs > 0 ? s.etaMs : undefined;
      },
      60_000,
      100,
    );
    console.log(`# ETA while signing: ${eta} ms`);

    // SIGKILL mid-locale. No other worker runs BullMQ's stalled check yet: the job stays active in BullMQ,
    // and status shows it stalled once the heartbeat is stale, the heartbeat's age growing.
    const victim = await waitFor(
      'a locale active on the worker to kill',
      async () => (await status()).locales.find((l) => l.state === 'active' && l.worker === id1),
      30_000,
      20,
    );
    w1.proc.kill('SIGKILL');
    await w1.exited;
    const stalled = await waitFor(
      'the killed worker’s locale shown as stalled',
      async () => {
        const l = (await status()).locales.find((x) => x.locale === victim.locale)!;
        return l.state === 'stalled' ? l : undefined;
      },
      30_000,
      100,
    );
    assert.equal(stalled.worker, id1);
    assert.ok(stalled.workerSeenMs! >= 2000, JSON.stringify(stalled));
    const b1 = (await heartbeat(id1))!;
    assert.equal(b1.state, 'stale');
    await new Promise((res) => setTimeout(res, 600));
    const b2 = (await heartbeat(id1))!;
    assert.ok(b2.ageMs > b1.ageMs, `age grows: ${b1.ageMs} → ${b2.ageMs}`);
    // The CLI says the same: the workers table and the locale's state.
    const st = await runCli(['status', 'measured', '-c', cfg]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`^${victim.locale}\\s+stalled\\s`, 'm'));
    const ws = await runCli(['status', '--workers', '--json', '-c', cfg]);
    assert.equal(ws.code, 0, ws.stderr);
    const listed = (JSON.parse(ws.stdout) as { workers: WorkerHeartbeat[] }).workers;
    assert.equal(listed.find((w) => w.id === id1)?.state, 'stale');
    const text = await runCli(['status', '-c', cfg]);
    assert.match(text.stdout, new RegExp(`^${id1}\\s+stale\\s+\\d+ s ago\\s`, 'm'));

    // A second worker's stalled-job check hands the job back; it runs again and completes.
    const w2 = spawnOperatorWorker(cfg);
    workers.push(w2);
    await w2.ready();
    const done = await waitFor(
      'the release completed',
      async () => {
        const s = await status();
        return s.state === 'completed' || s.state === 'failed' ? s : undefined;
      },
      150_000,
      200,
    );
    assert.equal(done.state, 'completed', JSON.stringify(done.locales.map((l) => [l.locale, l.error])));
    for (const l of done.locales) {
      const expected = l.locale === victim.locale ? 2 : 1;
      assert.equal(l.attempts, expected, `${l.locale} started ${expected} time(s): ${JSON.stringify(l)}`);
    }
    assert.equal(done.locales.find((l) => l.locale === victim.locale)!.stalls, 1);
    const final = await runCli(['status', 'measured', '-c', cfg, '--json']);
    const json = JSON.parse(final.stdout) as ReleaseStatus;
    assert.equal(json.locales.find((l) => l.locale === victim.locale)!.attempts, 2);
    const tries = await runCli(['status', 'measured', '-c', cfg]);
    assert.match(
      tries.stdout,
      new RegExp(`^${victim.locale}\\s+completed\\s+\\S+\\s+\\d+\\s+\\d+\\s+2\\s`, 'm'),
    );

    // A clean stop: the heartbeat says stopped, not stale.
    w2.proc.kill('SIGTERM');
    assert.equal(await w2.exited, 0);
    assert.equal((await heartbeat(w2.id!))?.state, 'stopped');
  });

  test('/metrics answers 200 with marsign_redis_up 0 and the process metrics while Redis is down', async () => {
    // A Redis and server of its own, so stopping it leaves the other scenario's alone.
    const own = await TestRedis.start();
    const d = mkdtempSync(join(tmpdir(), 'marsign-metrics-down-'));
    const srv = await startServer(writeConfig(d, own.url, ['dev']));
    try {
      const up = await fetch(`${srv.url}/metrics`);
      assert.equal(up.status, 200);
      assert.match(await up.text(), /^marsign_redis_up 1$/m);
      await own.stop();
      const res = await fetch(`${srv.url}/metrics`);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.match(text, /^marsign_redis_up 0$/m);
      assert.match(text, /^marsign_server_process_cpu_seconds_total \d/m);
      // Figures kept in Redis are left out, not reported as zero.
      assert.doesNotMatch(text, /^marsign_jobs\{/m);
      assert.doesNotMatch(text, /^marsign_locale_duration_seconds_count/m);
    } finally {
      // The server's Redis clients close cleanly (and stop reconnecting, which would keep this file's
      // process alive) once a Redis answers on their port again.
      const back = await TestRedis.start(own.port).catch(() => undefined);
      await Promise.race([srv.close().catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
      await back?.stop();
      await own.stop();
      rmSync(d, { recursive: true, force: true });
    }
  });
});
