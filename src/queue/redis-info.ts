/**
 * What the queue needs to know about the Redis server itself: whether it persists its data (a Redis
 * without AOF or RDB save points loses every queued release when it restarts), and its `run_id` (new at
 * each start, so a changed id means the server restarted). `CONFIG` may be disabled or renamed on a
 * managed Redis: persistence is then `unknown`, never guessed.
 */
import type { Redis } from 'ioredis';

export interface RedisPersistence {
  /**
   * `on`: AOF or RDB save points (a restart keeps the queue, up to the last write or snapshot);
   * `off`: neither (a restart loses everything); `unknown`: the server would not say.
   */
  state: 'on' | 'off' | 'unknown';
  /** `CONFIG GET appendonly` (`yes`/`no`). */
  appendonly?: string;
  /** `CONFIG GET save` (RDB save points, `""` when none). */
  save?: string;
  /** Why it is unknown (the server's error, e.g. CONFIG renamed away). */
  reason?: string;
}

/** One `CONFIG GET` value; undefined when the server does not know the parameter. */
async function configGet(redis: Redis, name: string): Promise<string | undefined> {
  const r = (await redis.config('GET', name)) as unknown;
  if (!Array.isArray(r)) return undefined;
  const i = (r as unknown[]).findIndex((v, k) => k % 2 === 0 && v === name);
  const v = i >= 0 ? (r as unknown[])[i + 1] : undefined;
  return typeof v === 'string' ? v : undefined;
}

export async function redisPersistence(redis: Redis): Promise<RedisPersistence> {
  let appendonly: string | undefined;
  let save: string | undefined;
  try {
    [appendonly, save] = await Promise.all([configGet(redis, 'appendonly'), configGet(redis, 'save')]);
  } catch (err) {
    return { state: 'unknown', reason: (err as Error).message.split('\n')[0]! };
  }
  if (appendonly === undefined || save === undefined)
    return { state: 'unknown', reason: 'CONFIG GET returned no value for appendonly/save' };
  const state = appendonly === 'yes' || save.trim() !== '' ? 'on' : 'off';
  return { state, appendonly, save };
}

/** `off (appendonly no, save "")`, `on (…)`, or `unknown (reason)`: for logs and error messages. */
export function describePersistence(p: RedisPersistence): string {
  if (p.state === 'unknown') return `unknown (${p.reason ?? 'CONFIG GET refused'})`;
  return `${p.state} (appendonly ${p.appendonly}, save ${JSON.stringify(p.save)})`;
}

/** The server's `run_id` (INFO server): a different one means the server restarted. */
export async function redisRunId(redis: Redis): Promise<string | undefined> {
  const info = await redis.info('server');
  return /^run_id:([0-9a-f]+)\s*$/m.exec(info)?.[1];
}
