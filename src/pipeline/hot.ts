/**
 * Hot entries: signed entries the cache served more than once, kept in memory after their second verified
 * read (a locale's own entry, signed for it and read back once, is not), so the next locales copy them
 * instead of reading the cache file and hashing it again (docs/ARCHITECTURE.md "Memory"). A release's locales
 * hold the same binaries: in the 100-locale benchmark the same 7 signed entries (17 MB) were read from the
 * cache and checked 700 times.
 *
 * Nothing here is trusted that was not checked: bytes are kept only after the store verified them (header,
 * HMAC, payload sha256), and an entry key names one valid output (input digest, codec settings, signer; with
 * a timestamp, up to its time), so serving it from memory serves what the cache would.
 *
 * Memory stays bounded: at most `capacity` bytes (default an eighth of the memory budget), each entry under a
 * lease of the pipeline's budget, least recently used dropped first; when the budget has no room for a
 * locale's buffer it reclaims hot entries first (MemoryBudget's reclaimer), if that makes the buffer fit. A
 * key is kept on its second offer (a verified read), so an entry read once is not kept: in a 1000-locale
 * release whose locales each hold one binary of their own, keeping those too (counting the pool's output as a
 * first offer) filled the capacity with entries no other locale used (max RSS 395 MiB against 338–340 MiB,
 * and 334 MiB without hot entries at all; docs/BENCHMARKS.md "Scale"). Bytes handed out are always copies: a
 * kept buffer is never written, transferred or read by another thread. Dropped copies are plain ArrayBuffers,
 * freed when V8 collects them.
 *
 * A kept entry lives as long as the pipeline (a worker's process) unless dropped: it outlasts a `cache prune`
 * that removes its file. That is sound (the bytes are a valid output of the key); the planner sees the key as
 * missing from the store and schedules it, and the work is served from here without a sign.
 */
import type { DecodedFacts } from '../../cache/types.js';
import type { Lease, MemoryBudget } from './budget.js';

export interface HotEntry {
  bytes: Uint8Array;
  sha256: string;
  facts?: DecodedFacts;
}

/** How many keys seen once are remembered (for the second-offer rule); the oldest are forgotten. */
const SEEN_KEYS = 4096;

export class HotEntries {
  /** Insertion order is recency order: the first is the least recently used. */
  private readonly kept = new Map<string, { entry: HotEntry; lease: Lease }>();
  private readonly seen = new Set<string>();
  private held = 0;
  /** Set while this class takes from the budget itself (the budget must not reclaim from it then). */
  private taking = false;
  /** Set by `clear` (the pipeline closed): nothing is kept any more. */
  private closed = false;
  /** Entries served from memory (pipeline stats). */
  readonly stats = { hits: 0 };

  constructor(
    private readonly budget: MemoryBudget,
    readonly capacity: number = Math.floor(budget.limit / 8),
  ) {
    budget.reclaimer = (bytes, whole) => (this.taking || (whole && bytes > this.held) ? 0 : this.drop(bytes));
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.held;
  }

  /** The size of the entry kept for `key`, if any. */
  size(key: string): number | undefined {
    return this.kept.get(key)?.entry.bytes.length;
  }

  /**
   * The entry of `key`, its bytes copied into `into` (else into a new buffer); undefined when not held.
   * An entry of another size than `into` is dropped (the store now holds other bytes for the key: a
   * re-signed entry with a new timestamp) and undefined returned, so the caller reads the store's.
   */
  take(key: string, into?: Uint8Array): HotEntry | undefined {
    const k = this.kept.get(key);
    if (!k) return undefined;
    const src = k.entry.bytes;
    if (into && into.length !== src.length) {
      this.forget(key, k);
      return undefined;
    }
    this.kept.delete(key);
    this.kept.set(key, k);
    this.stats.hits++;
    const bytes = into ?? new Uint8Array(new ArrayBuffer(src.length));
    bytes.set(src);
    return { ...k.entry, bytes };
  }

  /**
   * Verified bytes of `key` (read from the cache and checked): remembered the first time,
   * copied and kept the second, if they fit. The caller may change or transfer `bytes` afterwards.
   */
  offer(key: string, bytes: Uint8Array, sha256: string, facts?: DecodedFacts): void {
    if (this.closed || this.kept.has(key) || bytes.length > this.capacity) return;
    if (!this.seen.has(key)) {
      this.seen.add(key);
      if (this.seen.size > SEEN_KEYS) this.seen.delete(this.seen.values().next().value!);
      return;
    }
    // The budget first (it must not take room from the entries kept here), then room within the capacity.
    this.taking = true;
    let lease: Lease | undefined;
    try {
      lease = this.budget.tryTake(bytes.length);
    } finally {
      this.taking = false;
    }
    if (!lease) return;
    if (this.held + bytes.length > this.capacity) this.drop(this.held + bytes.length - this.capacity);
    const copy = new Uint8Array(new ArrayBuffer(bytes.length));
    copy.set(bytes);
    this.kept.set(key, { entry: { bytes: copy, sha256, ...(facts ? { facts } : {}) }, lease });
    this.seen.delete(key);
    this.held += bytes.length;
  }

  /** Drops least recently used entries until `bytes` are freed (or none is left); returns the bytes freed. */
  drop(bytes: number): number {
    let freed = 0;
    for (const [key, k] of this.kept) {
      if (freed >= bytes) break;
      freed += this.forget(key, k);
    }
    return freed;
  }

  /** Drops everything and keeps nothing more (the pipeline closes). */
  clear(): void {
    this.closed = true;
    this.drop(Infinity);
    this.seen.clear();
  }

  private forget(key: string, k: { entry: HotEntry; lease: Lease }): number {
    this.kept.delete(key);
    k.lease.release();
    this.held -= k.entry.bytes.length;
    return k.entry.bytes.length;
  }
}
