/**
 * The pipeline's memory budget (docs/ARCHITECTURE.md "Memory"): the big buffers a run holds on the main
 * thread — an input read whole, an output assembled or read back in memory, the stored bytes in every
 * locale's reorder window — are leased from one budget per Pipeline, so memory is bounded by the budget
 * (and the pool's threads), not by the size of the release or the number of releases a worker has seen.
 *
 * Two rules keep it simple and free of waiting (so it cannot deadlock): a lease that does not fit (even
 * after the hot entries, hot.ts, gave up their room) is refused and the caller takes the path that needs
 * less memory (plan and finish from the file instead of from memory, write the window's head before
 * reading further) — except a caller's first lease when it holds none (`force`), so every locale always
 * makes progress, one entry at a time at worst.
 *
 * Shared buffers (SharedArrayBuffer: the side-hash threads read them without a copy) are reused from a
 * free list: V8 frees a released buffer only when it collects its small wrapper, which a busy process may
 * put off for a long time — reuse keeps the resident size flat instead of growing with every locale.
 */
import { ConfigError } from '../errors.js';

/** Default budget: fits a 2-core, 4 GB signing host beside the pool threads' own decode buffers. */
export const DEFAULT_MEMORY_BUDGET = 512 * 1024 * 1024;
/** The smallest budget a config may set (below this nothing useful fits; tests construct smaller ones). */
export const MIN_MEMORY_BUDGET = 1024 * 1024;

export type BudgetErrorCode = 'CONFIG_INVALID';

/** Bytes held from the budget until released (once; releasing twice is harmless). */
export interface Lease {
  readonly bytes: number;
  release(): void;
}

/** A shared buffer of exactly the bytes asked for, under a lease. */
export interface SharedLease extends Lease {
  readonly buffer: Buffer;
  /**
   * Return the bytes to the budget but never reuse the buffer: for a failed or aborted run, whose pool
   * tasks or side-thread digests may still read it (V8 frees it once the last of them lets go).
   */
  discard(): void;
}

/**
 * A buffer of 1 MiB or more is allocated rounded up to a multiple of an eighth of the power of two at or
 * below its size (at most 1/8 more): the inputs and outputs of one release differ by a few KiB, and a
 * kept buffer one byte too small cannot be reused. Smaller ones are allocated as asked.
 */
export function roundedSize(size: number): number {
  if (size < 1024 * 1024) return size;
  const step = 2 ** Math.floor(Math.log2(size)) / 8;
  return Math.ceil(size / step) * step;
}

export class MemoryBudget {
  private used = 0;
  /** The most ever held at once (tests assert the pipeline kept within the budget by its own count). */
  peak = 0;
  /** Leases granted over the limit by `force` (a caller's first lease bigger than what was free). */
  forced = 0;
  /** Shared buffers allocated (not reused from the free list) (tests). */
  allocated = 0;
  private readonly free: SharedArrayBuffer[] = [];
  private freeBytes = 0;
  /**
   * Frees at least `bytes` of leases whose holder can give them up at once (hot entries, hot.ts) and
   * returns what it freed: asked before a lease is refused or forced over the limit. With `whole`, it frees
   * nothing unless it can free all of `bytes` (a refused lease gains nothing from a partial reclaim).
   */
  reclaimer: ((bytes: number, whole: boolean) => number) | undefined;

  constructor(readonly limit: number = DEFAULT_MEMORY_BUDGET) {
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new ConfigError(
        'CONFIG_INVALID' satisfies BudgetErrorCode,
        `the memory budget must be a positive integer of bytes, got ${limit}`,
      );
  }

  get inUse(): number {
    return this.used;
  }

  /** `bytes` from the budget if they fit, else undefined (the caller uses less memory instead). */
  tryTake(bytes: number): Lease | undefined {
    if (!this.room(bytes)) return undefined;
    return this.grant(bytes);
  }

  /** `bytes` whether or not they fit: for a caller holding nothing else, so it can make progress. */
  force(bytes: number): Lease {
    if (!this.room(bytes, false)) this.forced++;
    return this.grant(bytes);
  }

  /**
   * A shared buffer of `size` bytes if the budget has room (a released one reused when one is big enough),
   * else undefined. The buffer's contents are unspecified.
   */
  trySharedBuffer(size: number): SharedLease | undefined {
    if (!this.room(size)) return undefined;
    // A kept buffer big enough (not wastefully so) is taken off the free list before the lease is granted,
    // which may drop other kept buffers to make room.
    const i = this.free.findIndex((b) => b.byteLength >= size && b.byteLength <= size * 2);
    let sab: SharedArrayBuffer | undefined;
    if (i >= 0) {
      sab = this.free.splice(i, 1)[0]!;
      this.freeBytes -= sab.byteLength;
    }
    // A new buffer is rounded up when that fits (roundedSize). A buffer is counted whole: a reused one may
    // be up to twice the size asked for.
    const rounded = roundedSize(size);
    const lease = this.grant(sab ? sab.byteLength : this.used + rounded <= this.limit ? rounded : size);
    if (!sab) this.allocated++;
    const shared = sab ?? new SharedArrayBuffer(lease.bytes);
    let done = false;
    const end = (keep: boolean): void => {
      if (done) return;
      done = true;
      lease.release();
      if (keep) this.keep(shared);
    };
    return {
      bytes: lease.bytes,
      buffer: Buffer.from(shared, 0, size),
      release: () => end(true),
      discard: () => end(false),
    };
  }

  /**
   * Whether `bytes` fit beside what is leased, after reclaiming what can be given up (`whole`: only if
   * that makes them fit; a forced lease takes what it can, to stay as near the limit as possible).
   */
  private room(bytes: number, whole = true): boolean {
    if (this.used + bytes > this.limit) this.reclaimer?.(this.used + bytes - this.limit, whole);
    return this.used + bytes <= this.limit;
  }

  private keep(sab: SharedArrayBuffer): void {
    // Released buffers are kept while they fit beside what is in use; the oldest go first.
    this.free.push(sab);
    this.freeBytes += sab.byteLength;
    while (this.free.length > 0 && this.freeBytes + this.used > this.limit) {
      this.freeBytes -= this.free.shift()!.byteLength;
    }
  }

  private grant(bytes: number): Lease {
    this.used += bytes;
    if (this.used > this.peak) this.peak = this.used;
    // Room for the new lease: drop kept buffers that no longer fit beside what is in use.
    while (this.free.length > 0 && this.freeBytes + this.used > this.limit)
      this.freeBytes -= this.free.shift()!.byteLength;
    let done = false;
    return {
      bytes,
      release: () => {
        if (done) return;
        done = true;
        this.used -= bytes;
      },
    };
  }
}
