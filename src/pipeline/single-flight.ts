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
