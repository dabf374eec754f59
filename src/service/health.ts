/**
 * Dockerflow health (CONVENTIONS 13, autograph `handlers.go`/`monitor.go`): `/__heartbeat__` runs each
 * dependency check with its own timeout and answers a JSON map; it is 500 only when a fatal check
 * fails. Canary results come from the workers' snapshots in Redis (workers hold the keys, not the server).
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import { redisPersistence } from '../queue/redis-info.js';
import { readSnapshots, type WorkerSnapshot } from '../queue/telemetry.js';

export const CHECK_TIMEOUT_MS = 2_000;
/** A canary result older than this (no worker re-ran it) is reported stale, not trusted. */
export const CANARY_STALE_MS = 15 * 60_000;

export type CheckStatus = 'ok' | 'warning' | 'failed';

export interface CheckResult {
  status: CheckStatus;
  /** A failed fatal check makes the heartbeat 500. */
  fatal: boolean;
  ms: number;
  detail?: unknown;
}

export interface Heartbeat {
  status: CheckStatus;
  checks: Record<string, CheckResult>;
}

async function timed(
  fatal: boolean,
  fn: () => Promise<{ status: CheckStatus; detail?: unknown }>,
): Promise<CheckResult> {
  const t = Date.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const r = await Promise.race([
      fn(),
      new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
      }),
    ]);
    return { ...r, fatal, ms: Date.now() - t };
  } catch (err) {
    return { status: 'failed', fatal, ms: Date.now() - t, detail: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

export async function heartbeat(opts: {
  redis: Redis;
  prefix: string;
  cacheDir: string;
  profiles: string[];
}): Promise<Heartbeat> {
  const checks: Record<string, CheckResult> = {};
  let snapshots: WorkerSnapshot[] = [];
  const [redisCheck, cacheCheck, persistenceCheck] = await Promise.all([
    timed(true, async () => {
      const pong = await opts.redis.ping();
      snapshots = await readSnapshots(opts.redis, opts.prefix);
      return { status: pong === 'PONG' ? 'ok' : 'failed', detail: { workers: snapshots.length } };
    }),
    timed(true, async () => {
      const st = await stat(opts.cacheDir);
      if (!st.isDirectory()) return { status: 'failed', detail: `${opts.cacheDir} is not a directory` };
      await access(opts.cacheDir, constants.R_OK | constants.W_OK);
      return { status: 'ok', detail: opts.cacheDir };
    }),
    // Without AOF or RDB save points a Redis restart loses every queued release; CONFIG may be refused.
    timed(false, async () => {
      const p = await redisPersistence(opts.redis);
      return { status: p.state === 'on' ? 'ok' : 'warning', detail: p };
    }),
  ]);
  checks.redis = redisCheck;
  checks.cache_dir = cacheCheck;
  checks.redis_persistence = persistenceCheck;
  checks.workers = {
    status: snapshots.length > 0 ? 'ok' : 'warning',
    fatal: false,
    ms: 0,
    detail: snapshots.length > 0 ? snapshots.map((s) => s.id) : 'no live worker',
  };
  const now = Date.now();
  for (const profile of opts.profiles) {
    const results = snapshots
      .map((s) => ({ worker: s.id, r: s.canary[profile] }))
      .filter(
        (x): x is { worker: string; r: NonNullable<typeof x.r> } =>
          x.r !== undefined && now - Date.parse(x.r.at) < CANARY_STALE_MS,
      );
    let result: CheckResult;
    if (results.length === 0)
      result = { status: 'warning', fatal: false, ms: 0, detail: 'no recent canary (no live worker)' };
    else if (results.some((x) => x.r.ok)) {
      const failing = results.filter((x) => !x.r.ok).map((x) => ({ worker: x.worker, error: x.r.error }));
      result = {
        status: failing.length ? 'warning' : 'ok',
        fatal: true,
        ms: 0,
        detail: { workers: results.length, failing },
      };
    } else {
      // Every live worker fails to sign with this profile: the service cannot do its job.
      result = {
        status: 'failed',
        fatal: true,
        ms: 0,
        detail: results.map((x) => ({ worker: x.worker, error: x.r.error })),
      };
    }
    checks[`canary:${profile}`] = result;
    const tokens = tokenCheck(results.map((x) => ({ worker: x.worker, tokens: x.r.tokens })));
    if (tokens) checks[`token:${profile}`] = tokens;
  }
  const values = Object.values(checks);
  const status: CheckStatus = values.some((c) => c.status === 'failed' && c.fatal)
    ? 'failed'
    : values.some((c) => c.status !== 'ok')
      ? 'warning'
      : 'ok';
  return { status, checks };
}

/**
 * `token:<profile>` from the workers' canary snapshots, for profiles with keys in PKCS#11 tokens: ok when
 * every worker reaches its tokens, is logged in and finds the keys; warning when some workers do not;
 * failed (fatal) when none does. Undefined for profiles with file keys only.
 */
function tokenCheck(
  reports: { worker: string; tokens: WorkerSnapshot['canary'][string]['tokens'] }[],
): CheckResult | undefined {
  const withTokens = reports.filter((r) => r.tokens && r.tokens.length > 0);
  if (withTokens.length === 0) return undefined;
  const healthy = (r: (typeof withTokens)[number]): boolean =>
    r.tokens!.every((t) => t.reachable && t.loggedIn && t.keyPresent);
  const good = withTokens.filter(healthy).length;
  return {
    status: good === withTokens.length ? 'ok' : good > 0 ? 'warning' : 'failed',
    fatal: true,
    ms: 0,
    detail: withTokens.map((r) => ({ worker: r.worker, tokens: r.tokens })),
  };
}
