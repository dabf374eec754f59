/**
 * Cross-process, cross-host single-flight on a cache key (the pipeline's `Coordinator`): the holder of
 * a Redis lock (`SET key token NX PX ttl`, renewed while it works) signs; everyone else waits for the
 * holder to finish and then reads the cache through `lookup`. A holder that dies stops renewing, its
 * lock expires, and the next waiter takes over. In-process callers share one promise first, so a
 * process asks Redis once per key.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Coordinator } from '../pipeline/types.js';

export interface RedisCoordinatorOptions {
  /** Key prefix, e.g. `marsign:lock:`. */
  keyPrefix: string;
  /** Lock time-to-live; a crashed holder blocks others at most this long. */
  lockMs?: number;
  /** How often a holder extends its lock (well under lockMs). */
  renewMs?: number;
  /** How often a waiter checks whether the holder is done. */
  pollMs?: number;
  /** Called when a holder finds its lock gone or taken (it keeps working: output is still correct). */
  onLockLost?: (key: string) => void;
}

export const LOCK_DEFAULTS = { lockMs: 30_000, renewMs: 10_000, pollMs: 100 } as const;

// Compare-and-delete / compare-and-extend: only the token holder may release or renew.
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;

export interface CoordinatorStats {
  /** Keys this process signed while holding the lock. */
  acquired: number;
  /** Times this process waited for another holder. */
  waited: number;
  /** Times a waiter found the lock free after waiting (expired or released without a cache entry). */
  takeovers: number;
}

export class RedisCoordinator implements Coordinator {
  private readonly inFlight = new Map<string, Promise<unknown>>();
  readonly local = false;
  private readonly lockMs: number;
  private readonly renewMs: number;
  private readonly pollMs: number;
  readonly stats: CoordinatorStats = { acquired: 0, waited: 0, takeovers: 0 };

  constructor(
    private readonly redis: Redis,
    private readonly options: RedisCoordinatorOptions,
  ) {
    this.lockMs = options.lockMs ?? LOCK_DEFAULTS.lockMs;
    this.renewMs = options.renewMs ?? Math.min(LOCK_DEFAULTS.renewMs, Math.floor(this.lockMs / 3));
    this.pollMs = options.pollMs ?? LOCK_DEFAULTS.pollMs;
    if (!(this.renewMs > 0 && this.renewMs < this.lockMs)) {
      throw new RangeError(
        `options.renewMs must be positive and below lockMs (${this.lockMs}), found ${this.renewMs}`,
      );
    }
  }

  once<T>(key: string, lookup: () => Promise<T | undefined>, work: () => Promise<T>): Promise<T> {
    const existing = this.inFlight.get(key);
    if (existing) return existing as Promise<T>;
    const p = this.acrossProcesses(key, lookup, work);
    this.inFlight.set(key, p);
    const forget = () => {
      if (this.inFlight.get(key) === p) this.inFlight.delete(key);
    };
    p.then(forget, forget);
    return p;
  }

  private async acrossProcesses<T>(
    key: string,
    lookup: () => Promise<T | undefined>,
    work: () => Promise<T>,
  ): Promise<T> {
    const found = await lookup();
    if (found !== undefined) return found;
    const lockKey = this.options.keyPrefix + key;
    const token = randomBytes(16).toString('hex');
    let waited = false;
    for (;;) {
      const ok = await this.redis.set(lockKey, token, 'PX', this.lockMs, 'NX');
      if (ok === 'OK') {
        if (waited) this.stats.takeovers++;
        return this.holding(key, lockKey, token, lookup, work);
      }
      if (!waited) this.stats.waited++;
      waited = true;
      // Wait while someone holds the lock; the cache is read once it is released or expires.
      while ((await this.redis.exists(lockKey)) === 1) await sleep(this.pollMs);
      const v = await lookup();
      if (v !== undefined) return v;
    }
  }

  private async holding<T>(
    key: string,
    lockKey: string,
    token: string,
    lookup: () => Promise<T | undefined>,
    work: () => Promise<T>,
  ): Promise<T> {
    let lost = false;
    const timer = setInterval(() => {
      this.redis.eval(RENEW, 1, lockKey, token, String(this.lockMs)).then(
        (r) => {
          if (r !== 1 && !lost) {
            lost = true;
            this.options.onLockLost?.(key);
          }
        },
        () => undefined,
      );
    }, this.renewMs);
    timer.unref();
    try {
      // The previous holder may have finished between our lookup and our SET.
      const v = await lookup();
      if (v !== undefined) return v;
      this.stats.acquired++;
      return await work();
    } finally {
      clearInterval(timer);
      await this.redis.eval(RELEASE, 1, lockKey, token).catch(() => undefined);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
