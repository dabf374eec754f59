/**
 * Stage 3, assemble: resolve entries a window ahead (so the pool stays busy and reads overlap signing)
 * and hand them to the container writer in index order from a small reorder buffer. When the output's
 * layout was predicted (every stored size known: a warm locale), the output is also assembled in shared
 * memory, so the finished file is never read back; any surprise (a hit turned miss, another size) drops it.
 *
 * Memory stays bounded: at most `threads + WINDOW_EXTRA` entries are in flight, their stored bytes leased
 * from the pipeline's memory budget (budget.ts; the head of the window is always allowed, so a locale always
 * progresses) — a passthrough entry's lease is held until its check (passthrough.ts) is done; decompressed
 * data only exists inside a worker thread. Every passthrough check must pass before `assemble` returns,
 * so the output is never finished (signed, committed) over an entry that failed one; the first failure
 * fails the locale at once.
 */
import type { ArchiveWriter, PredictedLayout } from '../archive/types.js';
import { CodedError } from '../errors.js';
import type { Lease } from './budget.js';
import type { EntryPlan } from './plan.js';
import { resolveEntry, type EntryOutcome, type LocaleInput } from './resolve.js';
import type { EntryRecord, LocaleProgress, PipelineErrorCode } from './types.js';

/** Entries in flight per locale beyond the pool's threads (reading ahead while workers sign). */
const WINDOW_EXTRA = 4;

export interface AssemblyTarget {
  /** Absent in a dry run. */
  writer?: ArchiveWriter;
  /** The predicted layout, when every entry's stored size was known. */
  layout?: PredictedLayout;
  /** The output being assembled in shared memory (with a layout small enough). */
  buffer?: Buffer;
}

export interface Assembly {
  records: EntryRecord[];
  warnings: string[];
  /** Every entry came out as predicted: `buffer` holds every entry. */
  asPredicted: boolean;
}

export async function assemble(
  l: LocaleInput,
  plans: readonly EntryPlan[],
  target: AssemblyTarget,
  onProgress?: (p: LocaleProgress) => void,
): Promise<Assembly> {
  const { layout, buffer, writer } = target;
  const slotOf = (i: number): Buffer | undefined => {
    if (!buffer || !layout) return undefined;
    const s = layout.slots[i]!;
    return buffer.subarray(s.offset, s.offset + s.size);
  };
  const progress: LocaleProgress = {
    stage: 'signing',
    entriesDone: 0,
    entriesTotal: plans.length,
    bytesDone: 0,
    bytesTotal: plans.reduce((n, p) => n + p.entry.size, 0),
    hits: 0,
    misses: 0,
    passthrough: 0,
    workBytesDone: 0,
  };
  const report = (): void => {
    progress.workBytesDone = l.ledger.work.inFlight(l.input);
    onProgress?.({ ...progress });
  };
  const unwatch = onProgress ? l.ledger.work.watch(l.input, report) : undefined;
  report();
  const records: EntryRecord[] = [];
  const warnings: string[] = [];
  let ok = layout !== undefined;
  const pending: Promise<EntryOutcome>[] = [];
  const windowSize = l.ctx.pool.threads + WINDOW_EXTRA;
  /** The budget lease of each entry in `pending` (same order). */
  const leases: Lease[] = [];
  let next = 0;
  /** Passthrough checks in flight, and the first that failed. */
  const checks: Promise<void>[] = [];
  /** Checks still holding their entry's lease (the window's bytes they read). */
  const holding = new Set<Promise<void>>();
  let checkFailed: { err: unknown } | undefined;

  const finishOne = async (): Promise<void> => {
    let out = await pending.shift()!;
    const i = records.length;
    const plan = plans[i]!;
    if (ok && out.data.bytes.length !== layout!.slots[i]!.size) ok = false;
    if (out.verified && !(await out.verified)) {
      // The cache entry was bad (the store counted and removed it): resolve it again the ordinary way.
      ok = false;
      out = await resolveEntry(l, plan, slotOf(i), false);
    }
    if (ok && buffer) {
      // An entry that did not land in its slot (signed here, or shared by another locale) is copied in.
      const off = layout!.slots[i]!.offset;
      const b = out.data.bytes;
      if (b.buffer !== buffer.buffer || b.byteOffset !== off) buffer.set(b, off);
    }
    records.push(out.record);
    if (out.warning) warnings.push(out.warning);
    if (writer) await writer.add(plan.entry, out.data);
    progress.entriesDone++;
    progress.bytesDone += plan.entry.size;
    const a = out.record.action;
    if (a === 'signed') progress.misses++;
    else if (a === 'shared' || a === 'cached') progress.hits++;
    else progress.passthrough++;
    const lease = leases.shift()!;
    if (out.checked) {
      const settled: Promise<void> = out.checked.then(
        () => {
          lease.release();
          holding.delete(settled);
        },
        (err: unknown) => {
          lease.release();
          holding.delete(settled);
          checkFailed ??= { err };
        },
      );
      holding.add(settled);
      checks.push(settled);
    } else lease.release();
    report();
  };

  try {
    while (next < plans.length || pending.length > 0) {
      if (l.signal?.aborted)
        throw l.signal.reason ?? new CodedError('ABORTED' satisfies PipelineErrorCode, 'aborted');
      if (checkFailed) throw checkFailed.err;
      const plan = plans[next];
      // The window's head is always allowed when the locale holds nothing else (so it progresses); more
      // only while the budget has room. Passthrough checks still reading earlier entries hold their bytes:
      // then the head waits for one of them rather than going over the budget on top of them.
      const lease =
        plan === undefined || pending.length >= windowSize
          ? undefined
          : pending.length === 0 && holding.size === 0
            ? l.ctx.budget.force(plan.entry.size)
            : l.ctx.budget.tryTake(plan.entry.size);
      if (lease) {
        leases.push(lease);
        const p = resolveEntry(l, plan!, l.dryRun ? undefined : slotOf(next));
        p.catch(() => undefined); // observed by finishOne; avoid unhandled rejections while queued
        pending.push(p);
        next++;
      } else if (pending.length > 0) await finishOne();
      else await Promise.race(holding);
    }
    await Promise.all(checks);
    if (checkFailed) throw checkFailed.err;
  } catch (err) {
    // Let in-flight entries and checks settle before the caller closes the source they read from.
    await Promise.allSettled(pending);
    await Promise.allSettled(checks);
    throw err;
  } finally {
    unwatch?.();
    for (const lease of leases) lease.release();
  }
  return { records, warnings, asPredicted: ok };
}
