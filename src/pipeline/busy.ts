/**
 * The signing pool's measured busy time. piscina's own `utilization` is a lifetime average (idle hours
 * before a release dilute it to ~0), so the pool counts its tasks itself: while n tasks are in flight,
 * min(n, threads) threads are busy (a task beyond that waits in piscina's queue). Busy thread-time is
 * kept in one-second buckets, and `utilisation()` is busy time over wall time × threads across the last
 * `windowMs` (or since the pool started, if that is shorter).
 */

export const UTILISATION_WINDOW_MS = 30_000;
const BUCKET_MS = 1_000;

export class BusyMeter {
  private inFlight = 0;
  private last: number;
  private readonly startedAt: number;
  /** Busy thread-ms per bucket, indexed by floor(t / BUCKET_MS) modulo the ring length. */
  private readonly ring: Float64Array;
  private readonly ringIds: Float64Array;
  /** Busy thread-ms since the start (a counter for Prometheus rate()). */
  private total = 0;

  constructor(
    readonly threads: number,
    readonly windowMs = UTILISATION_WINDOW_MS,
    private readonly now: () => number = () => performance.now(),
  ) {
    const n = Math.ceil(windowMs / BUCKET_MS) + 1;
    this.ring = new Float64Array(n);
    this.ringIds = new Float64Array(n).fill(-1);
    this.startedAt = this.now();
    this.last = this.startedAt;
  }

  /** A task was handed to the pool. */
  begin(): void {
    this.advance();
    this.inFlight++;
  }

  /** A task settled (result, error or abort). */
  end(): void {
    this.advance();
    this.inFlight = Math.max(0, this.inFlight - 1);
  }

  /** Busy thread-seconds since the meter started. */
  busySeconds(): number {
    this.advance();
    return this.total / 1000;
  }

  /** Busy fraction (0..1) of the pool's thread time over the window. */
  utilisation(): number {
    this.advance();
    const t = this.last;
    const from = Math.max(this.startedAt, t - this.windowMs);
    const wall = t - from;
    if (wall <= 0) return 0;
    let busy = 0;
    for (let i = 0; i < this.ring.length; i++) {
      const id = this.ringIds[i]!;
      if (id < 0) continue;
      const lo = id * BUCKET_MS;
      const hi = lo + BUCKET_MS;
      if (hi <= from) continue;
      // The bucket straddling the window's start counts in proportion (busy time is spread evenly in it).
      const part = lo >= from ? 1 : (hi - from) / BUCKET_MS;
      busy += this.ring[i]! * part;
    }
    return Math.min(1, busy / (wall * this.threads));
  }

  /** Add the busy time between the last change and now to the buckets it falls in. */
  private advance(): void {
    const t = this.now();
    const busyThreads = Math.min(this.inFlight, this.threads);
    let from = this.last;
    this.last = t;
    if (busyThreads === 0 || t <= from) return;
    this.total += (t - from) * busyThreads;
    // Only the window's buckets matter: a long busy stretch fills at most the ring.
    from = Math.max(from, t - this.windowMs - BUCKET_MS);
    while (from < t) {
      const id = Math.floor(from / BUCKET_MS);
      const to = Math.min(t, (id + 1) * BUCKET_MS);
      const slot = id % this.ring.length;
      if (this.ringIds[slot] !== id) {
        this.ringIds[slot] = id;
        this.ring[slot] = 0;
      }
      this.ring[slot]! += (to - from) * busyThreads;
      from = to;
    }
  }
}
