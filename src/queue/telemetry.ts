/**
 * Worker snapshots in Redis: each `marsign worker` writes its counters, pool state and canary results
 * under `<prefix>:worker:<id>` with a short TTL, so `marsign serve` (any host) can export metrics and
 * health without talking to workers. A dead worker's snapshot simply expires.
 */
import type { Redis } from 'ioredis';
import type { PlainError } from '../errors.js';

export const SNAPSHOT_TTL_MS = 20_000;

/** Upper bounds (seconds) of the locale duration histogram. */
export const LOCALE_SECONDS_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];

export interface CanaryResult {
  ok: boolean;
  ms: number;
  at: string;
  error?: PlainError;
  /** The profile's keys held in devices (PKCS#11 tokens), probed without signing; absent for file keys. */
  tokens?: TokenHealth[];
}

/** One device-held key as the worker's main thread sees it (src/keys/pkcs11.ts `probeToken`). */
export interface TokenHealth {
  /** Profile field: `authenticode.key`, `mar.keys[0]`. */
  field: string;
  /** The key's URI without secrets. */
  uri: string;
  reachable: boolean;
  loggedIn: boolean;
  keyPresent: boolean;
  /** Sessions this process has open on the token, and the token's limit (0: none reported). */
  sessions?: { open: number; max: number };
  error?: { code: string; message: string };
}

export interface WorkerSnapshot {
  id: string;
  host: string;
  pid: number;
  version: string;
  startedAt: string;
  updatedAt: string;
  concurrency: number;
  /** False once the worker is shutting down (no new jobs). */
  accepting: boolean;
  /**
   * `utilisation`: busy fraction over the last 30 s (src/pipeline/busy.ts); `busySeconds`: busy
   * thread-seconds since the pool started (absent from workers before it was measured).
   */
  pool: { threads: number; utilisation: number; queued: number; busySeconds?: number };
  /**
   * Bytes: the process's resident size, and its pipeline's memory budget, what is leased from it now and
   * the most ever leased (src/pipeline/budget.ts; absent from workers before the budget).
   */
  memory?: { rss: number; budget?: number; leased?: number; peakLeased?: number; hot?: number };
  counters: {
    signOperations: number;
    cacheHits: number;
    cacheMisses: number;
    cacheCorrupt: number;
    cacheBytesServed: number;
    localesCompleted: number;
    localesFailed: number;
    lockAcquired: number;
    lockWaited: number;
    lockTakeovers: number;
  };
  /** Cumulative locale durations: counts per LOCALE_SECONDS_BUCKETS bound (non-cumulative), +Inf last. */
  localeSeconds: { buckets: number[]; sum: number; count: number };
  active: string[];
  canary: Record<string, CanaryResult>;
  /**
   * Per profile: its MAR signature algorithm and public keys (SPKI DER, base64), null when it does not
   * MAR-sign. Public data, published so the server can hand a remote client what to check its outputs
   * against without loading any key itself.
   */
  marKeys?: Record<string, { algorithm: 'sha384' | 'sha1'; publicKeys: string[] } | null>;
}

export function snapshotKey(prefix: string, id: string): string {
  return `${prefix}:worker:${id}`;
}

export async function publishSnapshot(redis: Redis, prefix: string, s: WorkerSnapshot): Promise<void> {
  await redis.set(snapshotKey(prefix, s.id), JSON.stringify(s), 'PX', SNAPSHOT_TTL_MS);
}

export async function removeSnapshot(redis: Redis, prefix: string, id: string): Promise<void> {
  await redis.del(snapshotKey(prefix, id));
}

/** Every live worker's snapshot. */
export async function readSnapshots(redis: Redis, prefix: string): Promise<WorkerSnapshot[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:worker:*`, 'COUNT', 200);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  if (keys.length === 0) return [];
  const values = await redis.mget(...keys);
  const out: WorkerSnapshot[] = [];
  for (const v of values) {
    if (!v) continue;
    try {
      out.push(JSON.parse(v) as WorkerSnapshot);
    } catch {
      // A malformed snapshot is skipped, not fatal to metrics.
    }
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}
