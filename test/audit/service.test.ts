/**
 * The audit trail in the service, on a private Redis with two `marsign worker` processes: records wait
 * in the Redis stream while no drainer runs, the drainer then moves them into one log that verifies and
 * holds every locale (with the submitting API client); past the backlog bound a worker refuses to start
 * a locale; a drainer that died between its fsync and its acknowledgement does not write records twice;
 * no token appears in any Redis key, log line or record.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { startAuditDrain } from '../../src/audit/index.js';
import { AuditLog } from '../../src/audit/log.js';
import { auditKeys, auditQueueStatus, RedisAuditQueue } from '../../src/audit/redis.js';
import { verifyLog } from '../../src/audit/verify.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { CodedError } from '../../src/errors.js';
import { tempDir } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import {
  LOCALES,
  TOKEN_ENV,
  copyRelease,
  readManifest,
  spawnWorker,
  startServer,
  waitFor,
  writeConfig,
  type RunningServer,
  type WorkerProcess,
} from '../service/harness.js';
import { fakeEvent, records } from './_events.js';

/** Every value of every key in a Redis database, as text. */
async function dumpRedis(redis: Redis): Promise<string> {
  const parts: string[] = [];
  for (const key of await redis.keys('*')) {
    const type = await redis.type(key);
    parts.push(key);
    if (type === 'string') parts.push((await redis.get(key)) ?? '');
    else if (type === 'hash') parts.push(JSON.stringify(await redis.hgetall(key)));
    else if (type === 'list') parts.push(JSON.stringify(await redis.lrange(key, 0, -1)));
    else if (type === 'set') parts.push(JSON.stringify(await redis.smembers(key)));
    else if (type === 'zset') parts.push(JSON.stringify(await redis.zrange(key, '0', '-1')));
    else if (type === 'stream') parts.push(JSON.stringify(await redis.xrange(key, '-', '+')));
  }
  return parts.join('\n');
}

describe('audit trail in the service', { skip: REDIS_SKIP, timeout: 240_000 }, () => {
  let redis: TestRedis;
  let client: Redis;
  let dir: string;
  let cfgPath: string;
  let config: LoadedConfig;
  let server: RunningServer;
  let log: string;
  const token = randomBytes(24).toString('hex');
  const workers: WorkerProcess[] = [];

  before(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
    dir = tempDir('marsign-audit-svc-');
    cfgPath = writeConfig(dir, redis.url, ['dev'], {
      clients: { 'release-bot': { tokenEnv: TOKEN_ENV, profiles: ['dev'], scopes: ['submit', 'read:own'] } },
    });
    log = join(dir, 'audit', 'audit.jsonl');
    const raw = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
    raw.audit = { log };
    writeFileSync(cfgPath, JSON.stringify(raw, null, 2));
    config = await loadConfig(cfgPath);
    process.env[TOKEN_ENV] = token;
    server = await startServer(cfgPath);
    workers.push(spawnWorker(cfgPath), spawnWorker(cfgPath));
    await Promise.all(workers.map((w) => w.ready()));
  });

  after(async () => {
    for (const w of workers) if (w.alive) w.proc.kill('SIGKILL');
    await server?.close();
    client?.disconnect();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('two workers: records wait in Redis without a drainer, then reach one log that verifies and holds every locale', async () => {
    const rel = join(dir, 'r1');
    copyRelease(rel, [...LOCALES]);
    const res = await fetch(`${server.url}/releases`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        release: 'svc-1',
        profile: 'dev',
        output: join(dir, 'out1'),
        locales: Object.fromEntries(LOCALES.map((l) => [l, join(rel, l, 'complete.mar')])),
      }),
    });
    assert.equal(res.status, 201, await res.text());
    const prefix = config.file.redis!.prefix!;
    // 4 locales × (4 signable entries + the MAR signature).
    const expected = LOCALES.length * 5;
    await waitFor(
      'every locale audited in Redis',
      async () => (await client.xlen(auditKeys(prefix).stream)) === expected,
      120_000,
      250,
    );
    const before = await auditQueueStatus(client, prefix);
    assert.deepEqual([before.backlog, before.drainer], [expected, null]);

    const drain = await startAuditDrain(config);
    try {
      await waitFor(
        'the drainer to empty the stream',
        async () => (await client.xlen(auditKeys(prefix).stream)) === 0,
        30_000,
      );
      const st = await auditQueueStatus(client, prefix);
      assert.equal(st.drainer?.id, drain.drainer.stats.id);
      assert.equal(st.drained, expected);
    } finally {
      await drain.stop();
    }
    const v = await verifyLog(log);
    assert.equal(v.ok, true, v.problem?.reason);
    assert.equal(v.head.status, 'ok');
    const recs = records(log);
    assert.equal(recs.length, expected);
    assert.equal(new Set(recs.map((r) => r.sid)).size, expected, 'each stream entry written once');
    const workerHosts = new Set(recs.map((r) => r.host));
    assert.deepEqual([...workerHosts], [hostname()]);
    for (const locale of LOCALES) {
      const m = readManifest(join(dir, 'out1', locale, 'complete.mar'));
      const mine = recs.filter((r) => r.locale === locale);
      assert.ok(
        mine.every((r) => r.release === 'svc-1' && r.client === 'release-bot' && r.profile === 'dev'),
      );
      const mar = mine.filter((r) => r.op === 'mar');
      assert.deepEqual(
        mar.map((r) => r.outputSha256),
        [m.output_sha256],
      );
      for (const e of m.entries.filter((x) => x.action !== 'passthrough')) {
        const r = mine.filter((x) => x.entry === e.name);
        assert.deepEqual(
          r.map((x) => [x.action, x.inputSha256, x.outputSha256]),
          [[e.action, e.inputSha256, e.outputSha256]],
          `${locale} ${e.name}`,
        );
      }
    }
    assert.equal(recs.filter((r) => r.action === 'signed' && r.op === 'authenticode').length, 7);

    // No secret anywhere: the API token is in no Redis key or value, no log line, no record.
    const everything = [
      await dumpRedis(client),
      server.logs(),
      ...workers.map((w) => w.log),
      readFileSync(log, 'utf8'),
    ];
    for (const text of everything) assert.ok(!text.includes(token), 'the API token leaked');
  });

  test('past audit.maxBacklog a worker refuses to start a locale (retried), and takes records again once drained', async () => {
    const prefix = `bl${randomBytes(3).toString('hex')}`;
    const q = new RedisAuditQueue(client, prefix, 3);
    await q.ready();
    await q.append([fakeEvent(1), fakeEvent(2), fakeEvent(3)]);
    await assert.rejects(q.ready(), (e: CodedError) => e.code === 'AUDIT_BACKLOG' && e.retryable === true);
    const log2 = join(dir, 'backlog', 'audit.jsonl');
    const { AuditDrainer } = await import('../../src/audit/redis.js');
    const conn = new Redis(redis.url);
    const d = AuditDrainer.start({ redis: conn, prefix, log: await AuditLog.open(log2), blockMs: 100 });
    try {
      await waitFor('drained', async () => (await client.xlen(auditKeys(prefix).stream)) === 0, 10_000);
    } finally {
      await d.stop();
      conn.disconnect();
    }
    await q.ready();
    assert.equal(records(log2).length, 3);
  });

  test('a drainer that died after writing but before acknowledging: its successor writes nothing twice', async () => {
    const prefix = `dd${randomBytes(3).toString('hex')}`;
    const k = auditKeys(prefix);
    const q = new RedisAuditQueue(client, prefix);
    await q.append([fakeEvent(10), fakeEvent(11), fakeEvent(12)]);
    // The dead drainer: took the lease, read the batch (now pending), wrote two of three, never acked.
    await client.xgroup('CREATE', k.stream, 'drain', '0', 'MKSTREAM');
    const got = (await client.xreadgroup(
      'GROUP',
      'drain',
      'drainer',
      'COUNT',
      10,
      'STREAMS',
      k.stream,
      '>',
    )) as [string, [string, string[]][]][];
    const entries = got[0]![1];
    assert.equal(entries.length, 3);
    const log3 = join(dir, 'dedup', 'audit.jsonl');
    const al = await AuditLog.open(log3);
    await al.append(
      entries
        .slice(0, 2)
        .map(([id, f]) => ({ ...(JSON.parse(f[1]!) as ReturnType<typeof fakeEvent>), sid: id })),
    );
    const { AuditDrainer } = await import('../../src/audit/redis.js');
    const conn = new Redis(redis.url);
    const d = AuditDrainer.start({ redis: conn, prefix, log: await AuditLog.open(log3), blockMs: 100 });
    try {
      await waitFor('recovered', async () => (await client.xlen(k.stream)) === 0, 10_000);
      assert.equal(d.stats.deduplicated, 2);
    } finally {
      await d.stop();
      conn.disconnect();
    }
    const recs = records(log3);
    assert.deepEqual(
      recs.map((r) => r.entry),
      ['bin/entry-10.dll', 'bin/entry-11.dll', 'bin/entry-12.dll'],
    );
    assert.equal((await verifyLog(log3)).ok, true);
    assert.equal(await client.xpending(k.stream, 'drain').then((p) => (p as [number])[0]), 0);
  });

  test('only one drainer at a time: a second one stands by until the first stops', async () => {
    const prefix = `ld${randomBytes(3).toString('hex')}`;
    const { AuditDrainer } = await import('../../src/audit/redis.js');
    const [c1, c2] = [new Redis(redis.url), new Redis(redis.url)];
    const l = await AuditLog.open(join(dir, 'lease', 'audit.jsonl'));
    const a = AuditDrainer.start({ redis: c1, prefix, log: l, blockMs: 100, leaseMs: 600 });
    await waitFor('first active', async () => a.stats.active, 5_000, 20);
    const b = AuditDrainer.start({ redis: c2, prefix, log: l, blockMs: 100, leaseMs: 600 });
    await new Promise((r) => setTimeout(r, 800));
    assert.deepEqual([a.stats.active, b.stats.active], [true, false]);
    await a.stop();
    await waitFor('second takes over', async () => b.stats.active, 5_000, 20);
    await b.stop();
    c1.disconnect();
    c2.disconnect();
  });
});
