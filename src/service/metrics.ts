/**
 * Prometheus metrics for `/metrics`. Job counts come from the queue; signing, cache and pool figures
 * are the sums of the live workers' snapshots in Redis (so one server exports a whole fleet); the
 * locale-duration histogram is the sum of the workers' own histograms. When a worker stops, its
 * counters leave the sum: Prometheus sees a counter reset, which rate() handles.
 *
 * Redis down: the page still answers 200 with this process's own metrics (prom-client defaults) and
 * `marsign_redis_up 0`; the figures that live in Redis are left out, not reported as 0.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Redis } from 'ioredis';
import { readHeartbeats, type WorkerHeartbeat } from '../queue/heartbeat.js';
import { LOCALE_SECONDS_BUCKETS, readSnapshots, type WorkerSnapshot } from '../queue/telemetry.js';
import type { ReleaseQueue } from '../queue/types.js';

type CounterName = keyof WorkerSnapshot['counters'];

const COUNTERS: { name: string; help: string; field: CounterName }[] = [
  {
    name: 'marsign_sign_operations_total',
    help: 'Authenticode signing operations done by live workers',
    field: 'signOperations',
  },
  { name: 'marsign_cache_hits_total', help: 'Signable entries served from the cache', field: 'cacheHits' },
  { name: 'marsign_cache_misses_total', help: 'Signable entries not in the cache', field: 'cacheMisses' },
  {
    name: 'marsign_cache_corrupt_total',
    help: 'Cache entries found bad and treated as misses',
    field: 'cacheCorrupt',
  },
  {
    name: 'marsign_cache_bytes_served_total',
    help: 'Bytes served from the cache',
    field: 'cacheBytesServed',
  },
  {
    name: 'marsign_locales_completed_total',
    help: 'Locale jobs completed by live workers',
    field: 'localesCompleted',
  },
  {
    name: 'marsign_locales_failed_total',
    help: 'Locale jobs failed for good by live workers',
    field: 'localesFailed',
  },
  {
    name: 'marsign_single_flight_waits_total',
    help: 'Times a worker waited for another holder of a signing lock',
    field: 'lockWaited',
  },
];

/**
 * The locale-duration histogram in text exposition format, summed over workers' pre-bucketed counts
 * (prom-client's Histogram only takes single observations).
 */
export function localeHistogramText(snaps: WorkerSnapshot[]): string {
  const name = 'marsign_locale_duration_seconds';
  const counts = new Array<number>(LOCALE_SECONDS_BUCKETS.length + 1).fill(0);
  let sum = 0;
  let count = 0;
  for (const s of snaps) {
    s.localeSeconds.buckets.forEach((c, i) => {
      if (i < counts.length) counts[i]! += c;
    });
    sum += s.localeSeconds.sum;
    count += s.localeSeconds.count;
  }
  const lines = [`# HELP ${name} Wall time to sign one locale (live workers)`, `# TYPE ${name} histogram`];
  let cumulative = 0;
  LOCALE_SECONDS_BUCKETS.forEach((le, i) => {
    cumulative += counts[i]!;
    lines.push(`${name}_bucket{le="${le}"} ${cumulative}`);
  });
  lines.push(`${name}_bucket{le="+Inf"} ${count}`, `${name}_sum ${sum}`, `${name}_count ${count}`);
  return lines.join('\n') + '\n';
}

/** How long /metrics waits on Redis before it answers without the figures kept there. */
export const METRICS_REDIS_TIMEOUT_MS = 2_000;

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer from Redis within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** What one scrape read from Redis; undefined fields were not read (Redis down). */
interface Scrape {
  up: boolean;
  snaps: WorkerSnapshot[];
  beats: WorkerHeartbeat[];
  counts?: Record<'releases' | 'locales', Record<string, number>>;
}

export class ServiceMetrics {
  readonly registry = new Registry();
  private scrape: Scrape = { up: false, snaps: [], beats: [] };

  constructor(
    private readonly queue: ReleaseQueue,
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly redisTimeoutMs = METRICS_REDIS_TIMEOUT_MS,
  ) {
    const scrape = (): Scrape => this.scrape;
    const snaps = (): WorkerSnapshot[] => this.scrape.snaps;
    // The server process's own figures (CPU, memory, event loop, GC): there whether Redis is or not.
    collectDefaultMetrics({ register: this.registry, prefix: 'marsign_server_' });
    new Gauge({
      name: 'marsign_redis_up',
      help: 'Whether the server reached Redis for this scrape (1) or not (0: queue and worker figures absent)',
      registers: [this.registry],
      collect() {
        this.set(scrape().up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'marsign_jobs',
      help: 'Jobs by queue and state',
      labelNames: ['queue', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        const counts = scrape().counts;
        if (!counts) return;
        for (const [queue, byState] of Object.entries(counts)) {
          for (const [state, n] of Object.entries(byState)) this.set({ queue, state }, n);
        }
      },
    });
    new Gauge({
      name: 'marsign_worker_heartbeat_age_seconds',
      help: 'Seconds since each worker last beat (workers heard from in the last hour)',
      labelNames: ['worker', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const b of scrape().beats) this.set({ worker: b.id, state: b.state }, b.ageMs / 1000);
      },
    });
    new Gauge({
      name: 'marsign_workers',
      help: 'Live workers (snapshot in Redis)',
      registers: [this.registry],
      collect() {
        this.set(snaps().length);
      },
    });
    new Gauge({
      name: 'marsign_pool_utilisation',
      help: "Busy fraction of each worker's signing threads over the last 30 s (0..1)",
      labelNames: ['worker'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of snaps()) this.set({ worker: s.id }, s.pool.utilisation);
      },
    });
    new Gauge({
      name: 'marsign_pool_threads',
      help: 'Signing pool threads per worker',
      labelNames: ['worker'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of snaps()) this.set({ worker: s.id }, s.pool.threads);
      },
    });
    new Gauge({
      name: 'marsign_worker_memory_bytes',
      help: "Each worker's resident size (kind=rss) and its pipeline's memory budget (budget), leased now (leased), of which hot entries (hot), and at most (peak_leased)",
      labelNames: ['worker', 'kind'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of snaps()) {
          const m = s.memory;
          if (!m) continue;
          this.set({ worker: s.id, kind: 'rss' }, m.rss);
          if (m.budget !== undefined) this.set({ worker: s.id, kind: 'budget' }, m.budget);
          if (m.leased !== undefined) this.set({ worker: s.id, kind: 'leased' }, m.leased);
          if (m.peakLeased !== undefined) this.set({ worker: s.id, kind: 'peak_leased' }, m.peakLeased);
          if (m.hot !== undefined) this.set({ worker: s.id, kind: 'hot' }, m.hot);
        }
      },
    });
    new Counter({
      name: 'marsign_pool_busy_seconds_total',
      help: 'Busy signing-thread seconds of live workers',
      registers: [this.registry],
      collect() {
        this.reset();
        const total = snaps().reduce((a, s) => a + (s.pool.busySeconds ?? 0), 0);
        if (total > 0) this.inc(total);
      },
    });
    for (const c of COUNTERS) {
      new Counter({
        name: c.name,
        help: c.help,
        registers: [this.registry],
        collect() {
          this.reset();
          const total = snaps().reduce((a, s) => a + (s.counters[c.field] ?? 0), 0);
          if (total > 0) this.inc(total);
        },
      });
    }
  }

  /** Read what lives in Redis, each within the timeout; any failure: Redis counts as down. */
  private async read(): Promise<Scrape> {
    try {
      const t = this.redisTimeoutMs;
      const [snaps, beats, counts] = await Promise.all([
        within(readSnapshots(this.redis, this.prefix), t),
        within(readHeartbeats(this.redis, this.prefix), t),
        within(this.queue.counts(), t),
      ]);
      return { up: true, snaps, beats, counts };
    } catch {
      return { up: false, snaps: [], beats: [] };
    }
  }

  /** The Prometheus text exposition (never fails for Redis: see the module comment). */
  async render(): Promise<string> {
    this.scrape = await this.read();
    const base = await this.registry.metrics();
    return this.scrape.up ? base + localeHistogramText(this.scrape.snaps) : base;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Totals across live workers (dashboard). */
  async summary(): Promise<{
    workers: WorkerSnapshot[];
    hitRate: number | null;
    utilisation: number | null;
    signOperations: number;
  }> {
    const snaps = await readSnapshots(this.redis, this.prefix);
    const hits = snaps.reduce((a, s) => a + s.counters.cacheHits, 0);
    const misses = snaps.reduce((a, s) => a + s.counters.cacheMisses, 0);
    const threads = snaps.reduce((a, s) => a + s.pool.threads, 0);
    const busy = snaps.reduce((a, s) => a + s.pool.utilisation * s.pool.threads, 0);
    return {
      workers: snaps,
      hitRate: hits + misses > 0 ? hits / (hits + misses) : null,
      utilisation: threads > 0 ? busy / threads : null,
      signOperations: snaps.reduce((a, s) => a + s.counters.signOperations, 0),
    };
  }
}
