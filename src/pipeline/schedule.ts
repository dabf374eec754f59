/**
 * Cold-run scheduling: the planned misses of one or more locales go to the pool largest first
 * (longest-processing-time-first, order: plan.ts `schedulingOrder`), so the slowest entry starts at once
 * and no thread idles at the end while one big entry is still being signed.
 *
 * Each planned miss enters the single-flight coordinator at plan time with a `work` that waits for its
 * turn (a gate), so a locale that meets the key joins that promise instead of signing it out of order.
 * Memory stays bounded: a miss holds only (file, offset, size); the stored bytes are read when the gate
 * opens, and at most `threads` tasks are released at a time. Results go to the cache and the run ledger;
 * the single-flight promise forgets them once settled.
 */
import { FileSource } from '../io/byte-source.js';
import type { Produced, RunLedger, SigningContext } from './context.js';
import { schedulingOrder, type PlannedMiss } from './plan.js';
import { cacheLookup, produceEntry } from './produce.js';

export interface Scheduler {
  /** Plan more misses (e.g. the next locale of a release); unreleased ones are re-sorted. */
  add(more: PlannedMiss[]): void;
  /** Settles when every miss added so far has been signed or has failed (failures surface in the locales). */
  done(): Promise<void>;
}

interface Slot {
  miss: PlannedMiss;
  open: () => void;
  fail: (err: unknown) => void;
  released: boolean;
  settled: boolean;
  freed: boolean;
}

/**
 * Register every planned miss with the coordinator and release them to the pool in scheduling order, at
 * most `maxInFlight` (default: the pool's threads) at a time, so the next one goes to whichever thread
 * frees first. Only an in-process coordinator can hold gated slots cheaply (a distributed lock would be
 * held while waiting for its turn): callers schedule only with one.
 */
export function startScheduler(
  ctx: SigningContext,
  ledger: RunLedger,
  planned: PlannedMiss[],
  options: { maxInFlight?: number; signal?: AbortSignal; onSubmit?: (m: PlannedMiss) => void } = {},
): Scheduler {
  const maxInFlight = Math.max(1, options.maxInFlight ?? ctx.pool.threads);
  let slots: Slot[] = [];
  let running = 0;
  const all: Promise<unknown>[] = [];
  const free = (s: Slot): void => {
    if (!s.released || s.freed) return;
    s.freed = true;
    running--;
    releaseMore();
  };
  function releaseMore(): void {
    for (const s of slots) {
      if (running >= maxInFlight || options.signal?.aborted) return;
      if (s.released || s.settled) continue;
      s.released = true;
      running++;
      s.open();
    }
  }
  const work = async (slot: Slot, gate: Promise<void>): Promise<Produced> => {
    await gate;
    const m = slot.miss;
    try {
      options.onSubmit?.(m);
      const src = await FileSource.open(m.input);
      let raw: Uint8Array;
      try {
        raw = await src.read(m.entry.offset, m.entry.size);
      } finally {
        await src.close();
      }
      const item = { key: m.key, name: m.entry.name, raw, codec: m.codec, owner: m.input };
      return await produceEntry(ctx, ledger, item, options.signal, () => free(slot));
    } finally {
      free(slot);
    }
  };
  const register = (m: PlannedMiss): Slot => {
    const slot: Slot = {
      miss: m,
      open: () => undefined,
      fail: () => undefined,
      released: false,
      settled: false,
      freed: false,
    };
    const gate = new Promise<void>((res, rej) => {
      slot.open = res;
      slot.fail = rej;
    });
    gate.catch(() => undefined); // observed by `work`, or never needed (a hit)
    // A hit (another process signed it meanwhile) never takes a pool slot.
    const p = ctx.coordinator.once<Produced>(
      m.key,
      () => cacheLookup(ctx, m.key),
      () => work(slot, gate),
    );
    const settle = (): void => {
      slot.settled = true;
      free(slot);
    };
    all.push(p.then(settle, settle));
    return slot;
  };
  const add = (more: PlannedMiss[]): void => {
    if (options.signal?.aborted) return;
    const fresh = more.map(register);
    const order = new Map<Slot, number>();
    slots = [...slots, ...fresh];
    slots.forEach((s, i) => order.set(s, i));
    // `uses` of earlier misses may have grown with this batch: re-sort everything not yet released.
    slots.sort((a, b) => schedulingOrder(a.miss, b.miss) || order.get(a)! - order.get(b)!);
    releaseMore();
  };
  // An aborted run must not leave locales waiting on slots that will never open.
  options.signal?.addEventListener(
    'abort',
    () => {
      for (const s of slots) if (!s.released) s.fail(options.signal!.reason ?? new Error('aborted'));
    },
    { once: true },
  );
  add(planned);
  return { add, done: () => Promise.all(all).then(() => undefined) };
}
