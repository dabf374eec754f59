/**
 * Single-flight of passthrough checks in one process (passthrough.ts): concurrent checks of one check key
 * share one decode, and a key that passed is not looked up again. Kept apart from passthrough.ts so the
 * signing context can hold one without an import cycle.
 */
import type { PassthroughCheck } from './types.js';

/** Checks in flight and passed in this process, by check key (one per pipeline). */
export class PassthroughChecks {
  private readonly inFlight = new Map<string, Promise<PassthroughCheck>>();
  /** Keys passed in this process (also when the cache could not store the marker). */
  private readonly passed = new Set<string>();

  /** The outcome of `key`'s check: passed before (here or in the cache), or decoded now by `work`. */
  once(key: string, lookup: () => Promise<boolean>, work: () => Promise<void>): Promise<PassthroughCheck> {
    if (this.passed.has(key)) return Promise.resolve('cached');
    let p = this.inFlight.get(key);
    if (p) return p.then(() => 'cached' as const);
    p = (async (): Promise<PassthroughCheck> => {
      if (await lookup()) return 'cached';
      await work();
      return 'decoded';
    })();
    this.inFlight.set(key, p);
    const settle = (ok: boolean): void => {
      if (ok) this.passed.add(key);
      if (this.inFlight.get(key) === p) this.inFlight.delete(key);
    };
    p.then(
      () => settle(true),
      () => settle(false),
    );
    return p;
  }
}
