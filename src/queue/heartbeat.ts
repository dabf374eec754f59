/**
 * Worker liveness. Each `marsign worker` writes a heartbeat (host, pid, threads, utilisation, the jobs it
 * runs) every few seconds into one Redis hash, stamped with the *Redis server's* clock, so readers on
 * other hosts compare it with the same clock (no skew between machines). Unlike the worker snapshot
 * (telemetry.ts, which expires), a heartbeat stays after the worker dies, so `status` and the dashboard
 * can say when it was last heard from, and show its jobs `stalled` until BullMQ's stalled-job check
 * hands them to another worker. Heartbeats older than HEARTBEAT_KEEP_MS are pruned by readers.
 */
import type { Redis } from 'ioredis';

/** A heartbeat this old is removed when read (the worker is long gone). */
export const HEARTBEAT_KEEP_MS = 60 * 60_000;
/** A worker is stale after missing this many heartbeats (and at least HEARTBEAT_MIN_STALE_MS). */
export const HEARTBEAT_MISSES = 3;
export const HEARTBEAT_MIN_STALE_MS = 2_000;

export interface Heartbeat {
  id: string;
  host: string;
  pid: number;
  threads: number;
  /** Pool busy fraction over the last 30 s (src/pipeline/busy.ts). */
  utilisation: number;
  /** How often this worker beats (readers derive staleness from it). */
  everyMs: number;
  /** Job ids (`release@locale`) in progress at the beat. */
  active: string[];
  /** False once the worker is shutting down; `stopped` after it closed cleanly. */
  accepting: boolean;
  stopped?: boolean;
}

export type WorkerLiveness = 'alive' | 'stale' | 'stopped';

export interface WorkerHeartbeat extends Heartbeat {
  /** When the beat was written (Redis server clock). */
  at: string;
  /** Milliseconds since then. */
  ageMs: number;
  state: WorkerLiveness;
}

function keys(prefix: string): [string, string] {
  return [`${prefix}:heartbeats`, `${prefix}:heartbeat-at`];
}

/** HSET the beat and its time by the server's clock, in one step. */
const BEAT_SCRIPT = `
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ms)
return ms`;

export async function beat(redis: Redis, prefix: string, hb: Heartbeat): Promise<void> {
  await redis.eval(BEAT_SCRIPT, 2, ...keys(prefix), hb.id, JSON.stringify(hb));
}

/** The Redis server's clock in ms. */
async function serverNow(redis: Redis): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

export function staleAfterMs(everyMs: number): number {
  return Math.max(HEARTBEAT_MIN_STALE_MS, HEARTBEAT_MISSES * everyMs);
}

/** Every worker heard from in the last HEARTBEAT_KEEP_MS, newest beat first; older ones are removed. */
export async function readHeartbeats(redis: Redis, prefix: string): Promise<WorkerHeartbeat[]> {
  const [bodyKey, atKey] = keys(prefix);
  const [bodies, ats, now] = await Promise.all([
    redis.hgetall(bodyKey),
    redis.hgetall(atKey),
    serverNow(redis),
  ]);
  const out: WorkerHeartbeat[] = [];
  const gone: string[] = [];
  for (const [id, body] of Object.entries(bodies)) {
    const at = Number(ats[id]);
    let hb: Heartbeat;
    try {
      hb = JSON.parse(body) as Heartbeat;
    } catch {
      gone.push(id);
      continue;
    }
    if (!Number.isFinite(at) || now - at > HEARTBEAT_KEEP_MS) {
      gone.push(id);
      continue;
    }
    const ageMs = Math.max(0, now - at);
    const state: WorkerLiveness = hb.stopped
      ? 'stopped'
      : ageMs > staleAfterMs(hb.everyMs)
        ? 'stale'
        : 'alive';
    out.push({ ...hb, at: new Date(at).toISOString(), ageMs, state });
  }
  if (gone.length > 0) await Promise.all([redis.hdel(bodyKey, ...gone), redis.hdel(atKey, ...gone)]);
  return out.sort((a, b) => a.ageMs - b.ageMs || a.id.localeCompare(b.id));
}
