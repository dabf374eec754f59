/**
 * The signing pipeline (docs/ARCHITECTURE.md "Pipeline"): one piscina pool, one cache and one
 * single-flight coordinator shared by every locale signed through this object. Used in-process by
 * `marsign sign-locale` / `sign-release` and by the queue worker (with a Redis-lock coordinator).
 * The stages live in their own modules: plan.ts, resolve.ts (+ produce.ts, schedule.ts), assemble.ts,
 * finish.ts, report.ts, wired by locale.ts; release.ts runs many locales.
 */
import { performance } from 'node:perf_hooks';
import { openCacheStore } from '../../cache/factory.js';
import type { CacheStore } from '../../cache/types.js';
import type { AuditSink } from '../audit/types.js';
import { loadProfile } from '../config/index.js';
import type { LoadedConfig, SigningProfile } from '../config/types.js';
import { ConfigError, toPlainError, type PlainError } from '../errors.js';
import { buildPe } from '../formats/pe/synth.js';
import { DEFAULT_MEMORY_BUDGET, MemoryBudget } from './budget.js';
import { newCounters, RunLedger, type PipelineCounters, type SigningContext } from './context.js';
import { signLocale, type SignLocaleOptions } from './locale.js';
import { PassthroughChecks } from './check-flight.js';
import { planRelease, type PlannedMiss, type ReleasePlan } from './plan.js';
import { compilePolicy, type CompiledPolicy } from './policy.js';
import { SigningPool } from './pool.js';
import type { LocaleSigner, PlanOptions } from './release.js';
import { startScheduler, type Scheduler } from './schedule.js';
import { SideHasher } from './side-hash.js';
import { HotEntries } from './hot.js';
import { InProcessCoordinator } from './single-flight.js';
import type { Coordinator, LocaleManifest, PipelineErrorCode } from './types.js';

export type { SignLocaleOptions } from './locale.js';
export { manifestPath } from './report.js';
export { compilePolicy } from './policy.js';
export type { ReleasePlan, PlannedMiss, EntryKey } from './plan.js';
export { RunLedger } from './context.js';
export { InProcessCoordinator } from './single-flight.js';
export {
  signRelease,
  type LocaleSigner,
  type ReleaseLocaleReport,
  type ReleaseProgress,
  type ReleaseReport,
  type SignReleaseOptions,
} from './release.js';
export type * from './types.js';

export interface PipelineOptions {
  config: LoadedConfig;
  /** Worker threads (default: available cores). */
  threads?: number;
  /** The entry cache; undefined = the config's (cache/factory.ts), null = no cache. */
  cache?: CacheStore | null;
  /** Default: in-process single-flight. */
  coordinator?: Coordinator;
  /**
   * The locale-output tier (store whole signed locales, serve them to a re-run of the same input):
   * default the config's `cache.outputs`, else true. Each signLocale/signRelease call may override it.
   */
  outputCache?: boolean;
  /**
   * Where each produced locale's audit records go (src/audit: the local log, or the service's Redis
   * stream). None: not audited — every marsign command and the queue worker give one.
   */
  audit?: AuditSink;
  /**
   * Bytes of input, output and reorder-window buffers this pipeline may hold at once (budget.ts); default
   * the config's `limits.memoryBudget`, else DEFAULT_MEMORY_BUDGET.
   */
  memoryBudget?: number;
}

export interface PipelineStats {
  threads: number;
  /** Busy fraction of the pool's threads over the last 30 s (pool.ts). */
  utilisation: number;
  /** Busy thread-seconds since the pool started. */
  busySeconds: number;
  queued: number;
  signOperations: number;
  cache: {
    hits: number;
    misses: number;
    corrupt: number;
    bytesServed: number;
    /** Locales served whole by the locale-output tier, and looked up there without a hit. */
    outputHits: number;
    outputMisses: number;
  };
  /** The memory budget (budget.ts): its limit, the bytes leased now, and the most ever leased at once. */
  memory: { budget: number; inUse: number; peak: number; hot: { bytes: number; hits: number } };
  /** Passthrough entries decoded to check them, and found checked already (cache marker, this process). */
  passthrough: { decoded: number; cached: number };
}

type LoadedProfile = { profile: SigningProfile; policy: CompiledPolicy };

export class Pipeline implements LocaleSigner {
  private readonly profiles = new Map<string, Promise<LoadedProfile>>();
  private readonly counters: PipelineCounters = newCounters();
  private closed = false;
  /**
   * The hashing thread every locale of this pipeline shares (entry keys, cache verification, the
   * output's sha512 beside this thread's work). Started here, so its start-up overlaps loading the
   * profile rather than a locale; unref'd, so an idle one never keeps the process alive.
   */
  private readonly side = new SideHasher();
  /** Passthrough checks of every locale of this pipeline (one decode per unique blob at a time). */
  private readonly checks = new PassthroughChecks();
  /** Signed entries read more than once, kept in memory (hot.ts); none without a cache store. */
  private readonly hot: HotEntries | undefined;

  private constructor(
    readonly config: LoadedConfig,
    readonly pool: SigningPool,
    readonly cache: CacheStore | null,
    readonly coordinator: Coordinator,
    readonly outputCache: boolean,
    readonly audit: AuditSink | undefined,
    readonly budget: MemoryBudget,
  ) {
    this.hot = cache ? new HotEntries(budget) : undefined;
  }

  static async create(options: PipelineOptions): Promise<Pipeline> {
    if (!options || typeof options.config !== 'object' || options.config === null)
      throw new ConfigError(
        'CONFIG_MISSING' satisfies PipelineErrorCode,
        'Pipeline.create: options.config must be a loaded config',
      );
    if (options.outputCache !== undefined && typeof options.outputCache !== 'boolean')
      throw new ConfigError(
        'CONFIG_INVALID' satisfies PipelineErrorCode,
        `Pipeline.create: options.outputCache must be a boolean, got ${typeof options.outputCache}`,
      );
    const cache = options.cache === undefined ? await openCacheStore(options.config) : options.cache;
    const outputCache = options.outputCache ?? options.config.file.cache?.outputs ?? true;
    const budget = new MemoryBudget(
      options.memoryBudget ?? options.config.file.limits?.memoryBudget ?? DEFAULT_MEMORY_BUDGET,
    );
    const pool = new SigningPool(options.threads === undefined ? {} : { threads: options.threads });
    return new Pipeline(
      options.config,
      pool,
      cache,
      options.coordinator ?? new InProcessCoordinator(),
      outputCache,
      options.audit,
      budget,
    );
  }

  /** The loaded profile (keys in memory, main thread: MAR signing and the cache key fingerprint). */
  profile(name: string): Promise<LoadedProfile> {
    let p = this.profiles.get(name);
    if (!p) {
      p = (async () => {
        const profile = await loadProfile(this.config, name);
        // A profile without an authenticode section only MAR-signs: every entry passes through.
        const policy = compilePolicy(
          profile.authenticode ? profile.policy : { ...profile.policy, include: [] },
        );
        return { profile, policy };
      })();
      p.catch(() => this.profiles.delete(name));
      this.profiles.set(name, p);
    }
    return p;
  }

  private async context(name: string): Promise<SigningContext> {
    if (this.closed)
      throw new ConfigError('PIPELINE_CLOSED' satisfies PipelineErrorCode, 'the pipeline is closed');
    const { profile, policy } = await this.profile(name);
    return {
      config: this.config,
      profile,
      policy,
      pool: this.pool,
      store: this.cache,
      coordinator: this.coordinator,
      side: this.side,
      counters: this.counters,
      outputTier: this.outputCache,
      budget: this.budget,
      checks: this.checks,
      ...(this.hot ? { hot: this.hot } : {}),
      ...(this.audit ? { audit: this.audit } : {}),
    };
  }

  /**
   * Plan several locales at once (keys of every signable entry, unique cache misses) and start signing
   * the misses in scheduling order while planning continues. Pass the plan and the same ledger to each
   * `signLocale`, which then joins the scheduled work instead of signing in index order. With a
   * coordinator that is not local, only the keys are planned (no gated scheduling). With the
   * locale-output tier on, inputs whose whole output the cache holds are left out. `onPlanned` is told
   * each input as soon as it is planned, so its locale can start while the others are planned.
   */
  async plan(
    profileName: string,
    inputs: string[],
    ledger: RunLedger,
    signal?: AbortSignal,
    options: PlanOptions = {},
  ): Promise<ReleasePlan> {
    const ctx = await this.context(profileName);
    const skipInvalid = options.skipInvalid === true || ctx.policy.onInvalid === 'skip';
    const verifyPassthrough = options.verifyPassthrough ?? ctx.policy.verifyPassthrough;
    let scheduler: Scheduler | undefined;
    const onMisses = (misses: PlannedMiss[]): void => {
      if (!ctx.coordinator.local) return;
      if (scheduler) scheduler.add(misses);
      else scheduler = startScheduler(ctx, ledger, misses, signal ? { signal } : {});
    };
    return planRelease(ctx, inputs, onMisses, {
      ...((options.outputCache ?? this.outputCache) ? { outputs: { skipInvalid, verifyPassthrough } } : {}),
      ...(options.onPlanned ? { onPlanned: options.onPlanned } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  /** Sign one locale; alone unless `ledger` joins it to a run (a release). */
  async signLocale(options: SignLocaleOptions & { ledger?: RunLedger }): Promise<LocaleManifest> {
    const { ledger, ...opts } = options;
    const ctx = await this.context(opts.profile);
    return signLocale(ctx, ledger ?? new RunLedger(), opts);
  }

  stats(): PipelineStats {
    return {
      threads: this.pool.threads,
      utilisation: this.pool.utilisation,
      busySeconds: this.pool.busySeconds,
      queued: this.pool.queued,
      signOperations: this.counters.signOperations,
      cache: {
        hits: this.counters.hits,
        misses: this.counters.misses,
        // The store's own counter: no scan of the cache directory.
        corrupt: this.cache?.corruptSeen ?? 0,
        bytesServed: this.counters.bytesServed,
        outputHits: this.counters.outputHits,
        outputMisses: this.counters.outputMisses,
      },
      memory: {
        budget: this.budget.limit,
        inUse: this.budget.inUse,
        peak: this.budget.peak,
        hot: { bytes: this.hot?.bytes ?? 0, hits: this.hot?.stats.hits ?? 0 },
      },
      passthrough: { decoded: this.counters.passthroughDecoded, cached: this.counters.passthroughCached },
    };
  }

  /** Sign a synthetic PE through the pool and verify it (service health canary). Never cached. */
  async canary(profile: string): Promise<{ ok: boolean; ms: number; error?: PlainError }> {
    const t = performance.now();
    try {
      await this.profile(profile);
      const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'marsign-canary' });
      await this.pool.run({
        configPath: this.config.path,
        configSha256: this.config.sha256,
        profile,
        name: 'canary.exe',
        input: pe,
        codec: { codec: 'none' },
        maxOutputSize: 64 * 1024 * 1024,
      });
      return { ok: true, ms: performance.now() - t };
    } catch (err) {
      return { ok: false, ms: performance.now() - t, error: toPlainError(err) };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hot?.clear();
    await this.side.close();
    await this.pool.close();
  }
}
