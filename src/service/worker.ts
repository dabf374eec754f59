/**
 * `marsign worker`: one signing pool per process, consuming locale jobs from the release queue.
 * Cross-process single-flight goes through a Redis lock (RedisCoordinator); counters, pool state and
 * canary results are published to Redis for `marsign serve`; SIGTERM/SIGINT shut down gracefully.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { basename, dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { probeProfileKeys } from '../config/index.js';
import type { LoadedConfig } from '../config/types.js';
import { CodedError, UsageError, toPlainError, type PlainError } from '../errors.js';
import type { ServiceErrorCode } from './errors.js';
import { removeStaleTemps } from '../io/atomic.js';
import { Confinement } from '../io/confine.js';
import type { Coordinator, LocaleManifest, LocaleProgress } from '../pipeline/types.js';
import { VERSION } from '../version.js';
import { createRedis, redisSettings, type RedisSettings } from '../queue/connection.js';
import { configuredRoots } from '../queue/manifest.js';
import { beat } from '../queue/heartbeat.js';
import { describePersistence, redisPersistence, redisRunId } from '../queue/redis-info.js';
import { RedisCoordinator } from '../queue/redis-coordinator.js';
import {
  LOCALE_SECONDS_BUCKETS,
  publishSnapshot,
  removeSnapshot,
  type CanaryResult,
  type WorkerSnapshot,
} from '../queue/telemetry.js';
import type { LocaleJobData, LocaleJobResult } from '../queue/types.js';
import type { BlobStore } from '../../cache/types.js';
import { QueueWorkers, WORKER_DEFAULTS } from '../queue/worker.js';
import { createLogger, type Logger } from './logger.js';

/** What the worker needs from the pipeline (src/pipeline Pipeline satisfies it). */
export interface LocaleSigner {
  signLocale(options: {
    profile: string;
    input: string;
    output: string;
    onProgress?: (p: LocaleProgress) => void;
    signal?: AbortSignal;
    writeManifest?: boolean;
    confine?: Confinement;
    release?: string;
    locale?: string;
    client?: string;
  }): Promise<LocaleManifest>;
  stats(): {
    threads: number;
    utilisation: number;
    busySeconds?: number;
    queued: number;
    signOperations: number;
    cache: { hits: number; misses: number; corrupt: number; bytesServed: number };
    memory?: { budget: number; inUse: number; peak: number; hot?: { bytes: number } };
  };
  canary(profile: string): Promise<{ ok: boolean; ms: number; error?: PlainError }>;
  /** The profile's MAR algorithm and public keys (SPKI DER), null when it does not MAR-sign. */
  marPublicKeys?(profile: string): Promise<{ algorithm: 'sha384' | 'sha1'; keys: Uint8Array[] } | null>;
  close(): Promise<void>;
}

export interface WorkerServiceOptions {
  config: LoadedConfig;
  /** Default: from the config and $MARSIGN_REDIS_URL. */
  redis?: RedisSettings;
  /** Locale jobs at once (default 2: one reading/writing while another waits on the pool). */
  concurrency?: number;
  /** Pool threads (default: the pipeline's, i.e. available cores). */
  threads?: number;
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  maxStalledCount?: number;
  /** Redis single-flight lock TTL (a crashed holder delays others at most this long). */
  signLockMs?: number;
  /** Canary period; 0 = only at start. */
  canaryIntervalMs?: number;
  /** How long in-flight locales may take to finish on SIGTERM before they are handed back. */
  shutdownTimeoutMs?: number;
  snapshotIntervalMs?: number;
  logger?: Logger;
  /** Build the signer (default: src/pipeline Pipeline with the Redis coordinator). */
  createSigner?: (coordinator: Coordinator) => Promise<LocaleSigner>;
  /** Where recipe locales are rebuilt and signed (default: the OS temp dir); each gets its own subdirectory. */
  scratchDir?: string;
}

export const WORKER_SERVICE_DEFAULTS = {
  concurrency: 2,
  canaryIntervalMs: 5 * 60_000,
  shutdownTimeoutMs: 60_000,
  snapshotIntervalMs: 2_000,
  signLockMs: 30_000,
} as const;

function positiveInt(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
    throw new UsageError(
      'USAGE' satisfies ServiceErrorCode,
      `options.${name} must be a positive integer, found ${v}`,
    );
  }
}

export function summarise(
  m: LocaleManifest,
  locale: string,
  output: string,
  ms: number,
  worker: string,
): LocaleJobResult {
  const r: LocaleJobResult = {
    locale,
    output,
    manifest: `${output}.manifest.json`,
    entries: m.totals.entries,
    hits: m.totals.hits,
    misses: m.totals.misses,
    passthrough: m.totals.passthrough,
    skippedInvalid: m.totals.skippedInvalid,
    signOperations: m.totals.signOperations,
    inputBytes: m.totals.inputBytes,
    outputBytes: m.totals.outputBytes,
    ms: Math.round(ms),
    worker,
  };
  if (m.outputSha256) r.outputSha256 = m.outputSha256;
  if (m.outputSize !== undefined) r.outputSize = m.outputSize;
  return r;
}

/**
 * Remove the temp files (src/io/atomic.ts `.<name>.<pid>.<random>.tmp`) that a killed attempt left for
 * this output and its manifest: those of processes no longer alive, or older than a day (the shared
 * helper; a live process's temp is never taken). `dir`: where to look (default the output's directory;
 * the worker passes its confined descriptor's path).
 */
export async function removeStaleOutputTemps(output: string, dir = dirname(output)): Promise<number> {
  const base = basename(output);
  return (await removeStaleTemps(dir, { names: [base, `${base}.manifest.json`] })).length;
}

/** Confinement refusals (src/io/confine.ts) name the locale they failed. */
const CONFINEMENT_CODES = new Set(['PATH_ESCAPE', 'PATH_NOT_FILE', 'PATH_NOT_DIRECTORY']);

function namingLocale(err: unknown, locale: string): unknown {
  if (!(err instanceof CodedError) || !CONFINEMENT_CODES.has(err.code)) return err;
  Object.assign(err, {
    message: `locale ${locale}: ${err.message}`,
    details: { ...err.details, locale },
  });
  return err;
}

export class WorkerService {
  readonly id: string;
  private readonly startedAt = new Date().toISOString();
  private readonly canary: Record<string, CanaryResult> = {};
  private readonly active = new Set<string>();
  private readonly counts = { completed: 0, failed: 0 };
  private readonly histogram = {
    buckets: new Array<number>(LOCALE_SECONDS_BUCKETS.length + 1).fill(0),
    sum: 0,
    count: 0,
  };
  private accepting = true;
  /** The pool figures last published (the final heartbeat is written after the pool closed). */
  private lastPool: WorkerSnapshot['pool'] | undefined;
  /** The Redis server's run id when last seen (a new one after a reconnect: it restarted). */
  private redisRunId: string | undefined;
  private readonly marKeys: NonNullable<WorkerSnapshot['marKeys']> = {};
  /** The store's blobs (recipe locales), opened on the first recipe job. */
  private blobs: Promise<BlobStore> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly options: WorkerServiceOptions,
    readonly settings: RedisSettings,
    private readonly redis: Redis,
    private readonly coordinator: RedisCoordinator,
    private readonly signer: LocaleSigner,
    /** Every locale's files are opened inside `server.roots` (src/io/confine.ts). */
    private readonly confine: Confinement,
    private workers: QueueWorkers | undefined,
    readonly log: Logger,
    readonly concurrency: number,
  ) {
    this.id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  }

  static async start(options: WorkerServiceOptions): Promise<WorkerService> {
    positiveInt('concurrency', options.concurrency);
    positiveInt('threads', options.threads);
    positiveInt('snapshotIntervalMs', options.snapshotIntervalMs);
    const log = options.logger ?? createLogger({ name: 'marsign-worker' });
    // Before anything connects: a platform that cannot confine paths runs no job (fails closed).
    const confine = await Confinement.create(configuredRoots(options.config));
    const settings = options.redis ?? redisSettings(options.config);
    const redis = createRedis(settings);
    redis.on('error', (err: Error) => log.warn({ err: toPlainError(err) }, 'redis connection error'));
    const coordinator = new RedisCoordinator(redis, {
      keyPrefix: `${settings.prefix}:lock:`,
      lockMs: options.signLockMs ?? WORKER_SERVICE_DEFAULTS.signLockMs,
      onLockLost: (key) => log.warn({ key }, 'single-flight lock lost while signing'),
    });
    let signer: LocaleSigner;
    if (options.createSigner) signer = await options.createSigner(coordinator);
    else {
      const [{ Pipeline }, { AuditRecorder }, { RedisAuditQueue }] = await Promise.all([
        import('../pipeline/index.js'),
        import('../audit/sink.js'),
        import('../audit/redis.js'),
      ]);
      // Every locale's audit records go to the Redis stream that the drainer moves into the log.
      const audit = new AuditRecorder(
        new RedisAuditQueue(redis, settings.prefix, options.config.file.audit?.maxBacklog),
      );
      const pipeline = await Pipeline.create({
        config: options.config,
        coordinator,
        audit,
        ...(options.threads ? { threads: options.threads } : {}),
      });
      signer = Object.assign(pipeline, {
        marPublicKeys: async (name: string) => {
          const mar = (await pipeline.profile(name)).profile.mar;
          return mar ? { algorithm: mar.algorithm, keys: mar.keys.map((k) => k.publicKeyDer) } : null;
        },
      });
    }
    const concurrency = options.concurrency ?? WORKER_SERVICE_DEFAULTS.concurrency;
    const svc = new WorkerService(
      options,
      settings,
      redis,
      coordinator,
      signer,
      confine,
      undefined,
      log,
      concurrency,
    );
    log.info(
      {
        worker: svc.id,
        redis: settings.display,
        config: options.config.path,
        configSha256: options.config.sha256,
        concurrency,
        threads: signer.stats().threads,
        roots: confine.roots,
        version: VERSION,
      },
      'worker starting',
    );
    await svc.checkRedis();
    redis.on('ready', () => void svc.checkRedis());
    await svc.runCanaries();
    svc.workers = new QueueWorkers(settings, (data, ctx) => svc.handle(data, ctx), {
      concurrency,
      name: svc.id,
      lockDurationMs: options.lockDurationMs ?? WORKER_DEFAULTS.lockDurationMs,
      stalledIntervalMs: options.stalledIntervalMs ?? WORKER_DEFAULTS.stalledIntervalMs,
      maxStalledCount: options.maxStalledCount ?? WORKER_DEFAULTS.maxStalledCount,
      onCompleted: (data, result) => {
        svc.counts.completed++;
        svc.observe(result.ms / 1000);
        log.info(
          {
            release: data.release,
            locale: data.locale,
            client: data.client,
            ms: result.ms,
            hits: result.hits,
            misses: result.misses,
            signOperations: result.signOperations,
          },
          'locale completed',
        );
      },
      onFailed: (data, err, final) => {
        if (final) svc.counts.failed++;
        log.warn(
          { release: data?.release, locale: data?.locale, client: data?.client, reason: err.message, final },
          final ? 'locale failed' : 'locale failed, will retry',
        );
      },
      onError: (err) => log.warn({ err: toPlainError(err) }, 'queue worker error'),
      onLockLost: (jobs) => log.warn({ jobs }, 'lost the lock on locale jobs; stopped working on them'),
    });
    await svc.workers.waitUntilReady();
    await svc.publish();
    const every = options.snapshotIntervalMs ?? WORKER_SERVICE_DEFAULTS.snapshotIntervalMs;
    svc.timers.push(setInterval(() => void svc.publish(), every));
    const canaryEvery = options.canaryIntervalMs ?? WORKER_SERVICE_DEFAULTS.canaryIntervalMs;
    if (canaryEvery > 0) svc.timers.push(setInterval(() => void svc.runCanaries(), canaryEvery));
    for (const t of svc.timers) t.unref();
    log.info({ worker: svc.id }, 'worker ready');
    return svc;
  }

  /**
   * At start: warn when Redis persists nothing (a restart of it loses every queued release). After a
   * reconnect: a new run id means Redis restarted; without persistence, the releases it held are gone.
   */
  private async checkRedis(): Promise<void> {
    try {
      const [runId, p] = await Promise.all([redisRunId(this.redis), redisPersistence(this.redis)]);
      const previous = this.redisRunId;
      this.redisRunId = runId;
      const facts = { appendonly: p.appendonly, save: p.save, ...(p.reason ? { reason: p.reason } : {}) };
      if (previous === undefined) {
        if (p.state === 'off')
          this.log.warn(
            facts,
            'Redis persistence is off: a restart of Redis loses every queued release (enable appendonly)',
          );
        else if (p.state === 'unknown')
          this.log.warn(facts, `Redis persistence is ${describePersistence(p)}`);
        return;
      }
      if (runId === undefined || runId === previous) return;
      const restart = { previousRunId: previous, runId, ...facts, active: [...this.active] };
      if (p.state === 'on') this.log.warn(restart, 'Redis restarted');
      else
        this.log.error(
          restart,
          `Redis restarted with persistence ${p.state}: the releases and jobs it held are lost; ` +
            'submit them again (same release id)',
        );
    } catch (err) {
      this.log.warn({ err: toPlainError(err) }, 'could not read the Redis server state');
    }
  }

  private observe(seconds: number): void {
    let i = LOCALE_SECONDS_BUCKETS.findIndex((b) => seconds <= b);
    if (i < 0) i = LOCALE_SECONDS_BUCKETS.length;
    this.histogram.buckets[i]!++;
    this.histogram.sum += seconds;
    this.histogram.count++;
  }

  private async handle(
    data: LocaleJobData,
    ctx: { progress(p: LocaleProgress): void; signal: AbortSignal; attempt: number },
  ): Promise<LocaleJobResult> {
    const key = `${data.release}@${data.locale}`;
    this.active.add(key);
    this.log.info(
      { release: data.release, locale: data.locale, client: data.client, attempt: ctx.attempt },
      'locale started',
    );
    const t = performance.now();
    try {
      if (data.recipe) return await this.handleRecipe(data, data.recipe, ctx, t);
      // The roots are enforced again now, when the files are opened (the paths were checked at submit).
      const out = await this.confine.openDir(dirname(data.output), {
        create: true,
        what: 'output directory',
      });
      try {
        await removeStaleOutputTemps(data.output, out.pinned);
      } finally {
        await out.close();
      }
      const m = await this.signer.signLocale({
        profile: data.profile,
        input: data.input,
        output: data.output,
        onProgress: (p) => ctx.progress(p),
        signal: ctx.signal,
        writeManifest: true,
        confine: this.confine,
        release: data.release,
        locale: data.locale,
        ...(data.client !== undefined ? { client: data.client } : {}),
      });
      return summarise(m, data.locale, data.output, performance.now() - t, this.id);
    } catch (err) {
      throw namingLocale(err, data.locale);
    } finally {
      this.active.delete(key);
    }
  }

  /** A recipe locale: rebuilt from blobs, signed, published as blobs (src/transfer/worker.ts). */
  private async handleRecipe(
    data: LocaleJobData,
    recipe: string,
    ctx: { progress(p: LocaleProgress): void; signal: AbortSignal },
    started: number,
  ): Promise<LocaleJobResult> {
    this.blobs ??= (async () => {
      const { openCacheStore } = await import('../../cache/factory.js');
      const store = await openCacheStore(this.options.config);
      if (!store.blobs)
        throw new UsageError(
          'CACHE_NO_BLOBS' satisfies ServiceErrorCode,
          `the cache at ${store.location} holds no blobs`,
        );
      return store.blobs;
    })();
    const { signRecipeLocale } = await import('../transfer/worker.js');
    const r = await signRecipeLocale(
      await this.blobs,
      this.signer,
      {
        release: data.release,
        locale: data.locale,
        profile: data.profile,
        recipe,
        output: data.output,
        ...(data.client !== undefined ? { client: data.client } : {}),
      },
      {
        onProgress: (p) => ctx.progress(p),
        signal: ctx.signal,
        ...(this.options.scratchDir ? { scratch: this.options.scratchDir } : {}),
      },
    );
    return {
      ...summarise(r.manifest, data.locale, data.output, performance.now() - started, this.id),
      outputRecipe: r.outputRecipe,
      manifestBlob: r.manifestBlob,
      ...(r.manifest.outputSha512 ? { outputSha512: r.manifest.outputSha512 } : {}),
    };
  }

  /** Sign a sample with every configured profile; results go to health via the snapshot. */
  async runCanaries(): Promise<Record<string, CanaryResult>> {
    for (const profile of Object.keys(this.options.config.file.profiles)) {
      const r = await this.signer
        .canary(profile)
        .catch((err: unknown) => ({ ok: false, ms: 0, error: toPlainError(err) }));
      const c: CanaryResult = { ok: r.ok, ms: Math.round(r.ms), at: new Date().toISOString() };
      if (r.error) c.error = r.error;
      // Keys in tokens: reachable, logged in, key present (a probe; nothing is signed).
      const tokens = await probeProfileKeys(this.options.config, profile).catch(() => []);
      if (tokens.length > 0) {
        c.tokens = tokens;
        const bad = tokens.filter((t) => !t.reachable || !t.loggedIn || !t.keyPresent);
        if (bad.length) this.log.error({ profile, tokens: bad }, 'token check failed');
      }
      this.canary[profile] = c;
      if (!r.ok) this.log.error({ profile, error: r.error }, 'canary failed');
      const mar = await this.signer.marPublicKeys?.(profile).catch(() => undefined);
      if (mar !== undefined)
        this.marKeys[profile] = mar && {
          algorithm: mar.algorithm,
          publicKeys: mar.keys.map((k) => Buffer.from(k).toString('base64')),
        };
    }
    return { ...this.canary };
  }

  snapshot(): WorkerSnapshot {
    const s = this.signer.stats();
    return {
      id: this.id,
      host: hostname(),
      pid: process.pid,
      version: VERSION,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      concurrency: this.concurrency,
      accepting: this.accepting,
      pool: {
        threads: s.threads,
        utilisation: s.utilisation,
        queued: s.queued,
        ...(s.busySeconds !== undefined ? { busySeconds: s.busySeconds } : {}),
      },
      memory: {
        rss: process.memoryUsage.rss(),
        ...(s.memory
          ? {
              budget: s.memory.budget,
              leased: s.memory.inUse,
              peakLeased: s.memory.peak,
              ...(s.memory.hot ? { hot: s.memory.hot.bytes } : {}),
            }
          : {}),
      },
      counters: {
        signOperations: s.signOperations,
        cacheHits: s.cache.hits,
        cacheMisses: s.cache.misses,
        cacheCorrupt: s.cache.corrupt,
        cacheBytesServed: s.cache.bytesServed,
        localesCompleted: this.counts.completed,
        localesFailed: this.counts.failed,
        lockAcquired: this.coordinator.stats.acquired,
        lockWaited: this.coordinator.stats.waited,
        lockTakeovers: this.coordinator.stats.takeovers,
      },
      localeSeconds: {
        buckets: [...this.histogram.buckets],
        sum: this.histogram.sum,
        count: this.histogram.count,
      },
      active: [...this.active],
      canary: { ...this.canary },
      marKeys: { ...this.marKeys },
    };
  }

  /** The snapshot (metrics, health), then the heartbeat (liveness: status, dashboard). */
  private async publish(): Promise<void> {
    try {
      const snap = this.snapshot();
      await publishSnapshot(this.redis, this.settings.prefix, snap);
      this.lastPool = snap.pool;
      await this.beat();
    } catch (err) {
      this.log.warn({ err: toPlainError(err) }, 'could not publish worker snapshot');
    }
  }

  private beat(stopped = false): Promise<void> {
    return beat(this.redis, this.settings.prefix, {
      id: this.id,
      host: hostname(),
      pid: process.pid,
      threads: this.lastPool?.threads ?? 0,
      utilisation: this.lastPool?.utilisation ?? 0,
      everyMs: this.options.snapshotIntervalMs ?? WORKER_SERVICE_DEFAULTS.snapshotIntervalMs,
      // Job ids as BullMQ names them (`release@locale`), so status can match them.
      active: [...this.active],
      accepting: this.accepting,
      ...(stopped ? { stopped } : {}),
    });
  }

  /** Graceful shutdown: stop taking jobs, finish (or hand back) in-flight ones, close pool and Redis. */
  close(reason = 'close'): Promise<void> {
    this.closing ??= (async () => {
      this.accepting = false;
      this.log.info({ worker: this.id, reason, active: [...this.active] }, 'worker shutting down');
      for (const t of this.timers) clearInterval(t);
      await this.publish();
      const timeout = this.options.shutdownTimeoutMs ?? WORKER_SERVICE_DEFAULTS.shutdownTimeoutMs;
      const { forced } = this.workers ? await this.workers.close(timeout) : { forced: false };
      if (forced)
        this.log.warn({ worker: this.id }, 'in-flight locales handed back after the shutdown timeout');
      await this.signer.close();
      await removeSnapshot(this.redis, this.settings.prefix, this.id).catch(() => undefined);
      // The heartbeat stays, marked stopped: status tells a clean stop from a silent death.
      // Bounded: a Redis that is down must not hold the shutdown.
      await Promise.race([
        this.beat(true).catch(() => undefined),
        new Promise((r) => setTimeout(r, 2_000).unref()),
      ]);
      await this.redis.quit().catch(() => this.redis.disconnect());
      this.log.info(
        { worker: this.id, completed: this.counts.completed, failed: this.counts.failed },
        'worker stopped',
      );
    })();
    return this.closing;
  }

  /** Close on the first SIGTERM/SIGINT; a second signal exits at once. */
  installSignalHandlers(onClosed: (code: number) => void): void {
    let count = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      count++;
      if (count > 1) {
        this.log.warn({ signal: sig }, 'second signal: exiting now');
        onClosed(130);
        return;
      }
      this.close(sig).then(
        () => onClosed(0),
        (err: unknown) => {
          this.log.error({ err: toPlainError(err) }, 'error during shutdown');
          onClosed(2);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
}
