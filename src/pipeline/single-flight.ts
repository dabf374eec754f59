import type { Coordinator } from './types.js';

/**
 * In-process single-flight: concurrent callers with the same key share one `lookup`/`work` promise,
 * so an entry that appears in several locales of one release is signed once per process. Across
 * processes the service supplies a Redis-lock Coordinator with the same interface.
 */
export class InProcessCoordinator implements Coordinator {
  private readonly inFlight = new Map<string, Promise<unknown>>();
  readonly local = true;

  once<T>(key: string, lookup: () => Promise<T | undefined>, work: () => Promise<T>): Promise<T> {
    const existing = this.inFlight.get(key);
    if (existing) return existing as Promise<T>;
    const p = (async () => {
      const found = await lookup();
      return found !== undefined ? found : await work();
    })();
    this.inFlight.set(key, p);
    // Forget the key once settled (a failure must not stick: the next caller retries).
    const forget = () => {
      if (this.inFlight.get(key) === p) this.inFlight.delete(key);
    };
    p.then(forget, forget);
    return p;
  }

  get size(): number {
    return this.inFlight.size;
  }
}

/**
 * Whether `err` is an abort as shared work ends with one: piscina's `AbortError` (a pool task whose
 * signal fired), Node's and the DOM's `AbortError`, or a `CodedError` `ABORTED`. Not a signal's custom
 * reason (the service aborts a job with `JOB_LOCK_LOST` / `WORKER_SHUTDOWN`): shared work only sees its
 * owner's signal through the pool, which reports every abort as an `AbortError`.
 */
export function isAbortError(err: unknown): boolean {
  const e = err as { name?: unknown; code?: unknown } | null;
  return e?.name === 'AbortError' || e?.code === 'ABORTED';
}

/** How often a caller re-tries a key whose shared work other callers' aborts ended. */
const MAX_JOINS = 8;

/**
 * Run single-flight work (`join`: a `once` call) for a caller with its own abort signal. Work another
 * caller started runs under that caller's signal: when it was aborted (a cancelled release, a job of
 * another release) and this caller's was not, the key is tried again — the aborted slot is forgotten, so
 * the retry finds the result stored or does the work itself — instead of failing with another's abort.
 */
export async function joinUnlessAborted<T>(
  join: () => Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await join();
    } catch (err) {
      if (!isAbortError(err) || signal?.aborted || attempt >= MAX_JOINS) throw err;
    }
  }
}
