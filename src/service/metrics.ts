/**
 * Prometheus metrics for `/metrics`. Job counts come from the queue; signing, cache and pool figures
 * are the sums of the live workers' snapshots in Redis (so one server exports a whole fleet); the
 * locale-duration histogram is the sum of the workers' own histograms. When a worker stops, its
 * counters leave the sum: Prometheus sees a counter reset, which rate() handles.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import type { Redis } from 'ioredis';
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

export class ServiceMetrics {
  readonly registry = new Registry();
  private snaps: WorkerSnapshot[] = [];

  constructor(
    private readonly queue: ReleaseQueue,
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    const q = this.queue;
    const snaps = (): WorkerSnapshot[] => this.snaps;
    new Gauge({
      name: 'marsign_jobs',
      help: 'Jobs by queue and state',
      labelNames: ['queue', 'state'],
      registers: [this.registry],
      async collect() {
        const counts = await q.counts();
        this.reset();
        for (const [queue, byState] of Object.entries(counts)) {
          for (const [state, n] of Object.entries(byState)) this.set({ queue, state }, n);
        }
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
      help: 'Signing pool utilisation per worker (0..1)',
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

  /** The Prometheus text exposition. */
  async render(): Promise<string> {
    this.snaps = await readSnapshots(this.redis, this.prefix);
    const base = await this.registry.metrics();
    return base + localeHistogramText(this.snaps);
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
