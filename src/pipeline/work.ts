/**
 * Signing work in flight, per locale: the pool threads' TaskProgress (protocol.ts), folded into stored
 * bytes of the entries being signed, so a locale's progress moves while one big entry is decoded, signed
 * and recompressed instead of jumping when it finishes. Keyed by the run ledger's owner (the input path
 * the work is attributed to): in a release a task may run for a locale before that locale's own stage
 * reaches the entry.
 */
interface Task {
  owner: string;
  /** Stored bytes of the entry this task has worked through (fraction done × stored size). */
  bytes: number;
}

export class WorkMeter {
  private readonly tasks = new Map<number, Task>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private nextId = 1;

  /** A task starts for `owner`; the id goes to update/end. */
  begin(owner: string): number {
    const id = this.nextId++;
    this.tasks.set(id, { owner, bytes: 0 });
    return id;
  }

  /** The task reported `done` of `total` work units for an entry of `stored` bytes. */
  update(id: number, stored: number, done: number, total: number): void {
    const t = this.tasks.get(id);
    if (!t || !(total > 0)) return;
    const bytes = Math.round(stored * Math.min(1, Math.max(0, done / total)));
    if (bytes <= t.bytes) return;
    t.bytes = bytes;
    this.notify(t.owner);
  }

  /** The task settled: its entry's bytes are counted by the locale when it assembles the entry. */
  end(id: number): void {
    const t = this.tasks.get(id);
    if (!t) return;
    this.tasks.delete(id);
    this.notify(t.owner);
  }

  /** Stored bytes worked through by `owner`'s tasks still running. */
  inFlight(owner: string): number {
    let n = 0;
    for (const t of this.tasks.values()) if (t.owner === owner) n += t.bytes;
    return n;
  }

  /** Call `fn` whenever `owner`'s work in flight changes; returns the unsubscribe function. */
  watch(owner: string, fn: () => void): () => void {
    let set = this.watchers.get(owner);
    if (!set) this.watchers.set(owner, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.watchers.delete(owner);
    };
  }

  private notify(owner: string): void {
    for (const fn of this.watchers.get(owner) ?? []) fn();
  }
}
