/**
 * The signing pipeline (docs/ARCHITECTURE.md "Pipeline"): one piscina pool, one cache and one
 * single-flight coordinator shared by every locale signed through this object. Used in-process by
 * `marsign sign-locale` / `sign-release` and by the queue worker (with a Redis-lock coordinator).
 */
import { performance } from 'node:perf_hooks';
import { FsCacheStore } from '../../cache/fs-store.js';
import type { CacheStore } from '../../cache/types.js';
import { cacheSettings, loadProfile } from '../config/index.js';
import type { LoadedConfig, SigningProfile } from '../config/types.js';
import { ConfigError, toPlainError, type PlainError } from '../errors.js';
import { buildPe } from '../formats/pe/synth.js';
import {
  signLocaleWith,
  type LocaleContext,
  type Produced,
  type PipelineCounters,
  type SignLocaleOptions,
} from './locale.js';
import { planMisses, startPrefetch, type Plan, type PrefetchHandle } from './prefetch.js';
import { compilePolicy, type CompiledPolicy } from './policy.js';
import { SigningPool } from './pool.js';
import { SideHasher } from './side-hash.js';
import { InProcessCoordinator } from './single-flight.js';
import type { Coordinator, LocaleManifest } from './types.js';

export type { SignLocaleOptions } from './locale.js';
export { manifestPath } from './locale.js';
export { compilePolicy } from './policy.js';
export type { Plan, PlannedMiss, EntryKey, InputDigest } from './prefetch.js';
export { InProcessCoordinator } from './single-flight.js';
export {
  signRelease,
  loadReleaseSpec,
  type LoadReleaseOptions,
  type ReleaseProgress,
  type ReleaseSpec,
  type SignReleaseOptions,
} from './release.js';
export type { ReleaseManifest, ReleaseLocaleResult } from './manifest.js';
export type * from './types.js';

export interface PipelineOptions {
  config: LoadedConfig;
  /** Worker threads (default: available cores). */
  threads?: number;
  /** The entry cache; undefined = the config's filesystem cache, null = no cache. */
  cache?: CacheStore | null;
  /** Default: in-process single-flight. */
  coordinator?: Coordinator;
  /**
   * The locale-output tier (store whole signed locales, serve them to a re-run of the same input):
   * default the config's `cache.outputs`, else true. Each signLocale/signRelease call may override it.
   */
  outputCache?: boolean;
}

export interface PipelineStats {
  threads: number;
  utilisation: number;
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
}

export class Pipeline {
  private readonly profiles = new Map<string, Promise<{ profile: SigningProfile; policy: CompiledPolicy }>>();
  private readonly counters: PipelineCounters = { signOperations: 0, hits: 0, misses: 0, bytesServed: 0 };
  private readonly prefetched = new Map<string, Produced | null>();
  private corrupt = 0;
  private closed = false;
  /**
   * The hashing thread every locale of this pipeline shares (entry keys, cache verification, the
   * output's sha512 beside this thread's work). Started here, so its start-up (~20 ms) overlaps loading
   * the profile rather than a locale; unref'd, so an idle one never keeps the process alive.
   */
  private readonly side = new SideHasher();

  private constructor(
    readonly config: LoadedConfig,
    readonly pool: SigningPool,
    readonly cache: CacheStore | null,
    readonly coordinator: Coordinator,
    readonly outputCache: boolean,
  ) {}

  static async create(options: PipelineOptions): Promise<Pipeline> {
    if (!options || typeof options.config !== 'object' || options.config === null)
      throw new ConfigError('CONFIG_MISSING', 'Pipeline.create: options.config must be a loaded config');
    let cache = options.cache;
    if (cache === undefined) {
      const { dir, hmacSecret } = await cacheSettings(options.config);
      cache = new FsCacheStore({ root: dir, hmacSecret });
    }
    if (options.outputCache !== undefined && typeof options.outputCache !== 'boolean')
      throw new ConfigError(
        'CONFIG_INVALID',
        `Pipeline.create: options.outputCache must be a boolean, got ${typeof options.outputCache}`,
      );
    const outputCache = options.outputCache ?? options.config.file.cache?.outputs ?? true;
    const pool = new SigningPool(options.threads === undefined ? {} : { threads: options.threads });
    return new Pipeline(
      options.config,
      pool,
      cache,
      options.coordinator ?? new InProcessCoordinator(),
      outputCache,
    );
  }

  /** The loaded profile (keys in memory, main thread: MAR signing and the cache key fingerprint). */
  profile(name: string): Promise<{ profile: SigningProfile; policy: CompiledPolicy }> {
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

  private context(profile: SigningProfile, policy: CompiledPolicy): LocaleContext {
    return {
      config: this.config,
      profile,
      policy,
      pool: this.pool,
      cache: this.cache,
      coordinator: this.coordinator,
      counters: this.counters,
      prefetched: this.prefetched,
      outputCache: this.outputCache,
      side: this.side,
    };
  }

  /**
   * Plan several locales at once (keys of every signable entry, unique cache misses) and start
   * signing the misses largest first, while planning continues. Pass the plan to each `signLocale`,
   * which then joins the scheduled work instead of signing in index order. With a coordinator other
   * than the in-process one, only the keys are planned (no gated scheduling). With the locale-output
   * tier on (`options.outputCache`, default the pipeline's), each input is hashed first and inputs
   * whose whole output the cache holds are left out (`skipInvalid` is part of that key).
   */
  async plan(
    profileName: string,
    inputs: string[],
    signal?: AbortSignal,
    options: { outputCache?: boolean; skipInvalid?: boolean } = {},
  ): Promise<Plan> {
    if (this.closed) throw new ConfigError('PIPELINE_CLOSED', 'the pipeline is closed');
    const { profile, policy } = await this.profile(profileName);
    const ctx = this.context(profile, policy);
    const schedule = this.coordinator instanceof InProcessCoordinator;
    let handle: PrefetchHandle | undefined;
    const skipInvalid = options.skipInvalid === true || policy.onInvalid === 'skip';
    return planMisses(
      ctx,
      inputs,
      (misses) => {
        if (!schedule) return;
        if (handle) handle.add(misses);
        else handle = startPrefetch(ctx, misses, signal ? { signal } : {});
      },
      (options.outputCache ?? this.outputCache) ? { outputs: { skipInvalid } } : {},
    );
  }

  async signLocale(options: SignLocaleOptions): Promise<LocaleManifest> {
    if (this.closed) throw new ConfigError('PIPELINE_CLOSED', 'the pipeline is closed');
    const { profile, policy } = await this.profile(options.profile);
    try {
      return await signLocaleWith(this.context(profile, policy), options);
    } finally {
      await this.refreshCorrupt();
    }
  }

  private async refreshCorrupt(): Promise<void> {
    if (!this.cache) return;
    // The same in-process counter stats() reports, without scanning the whole cache after every locale.
    if (this.cache instanceof FsCacheStore) {
      this.corrupt = this.cache.corruptSeen;
      return;
    }
    try {
      this.corrupt = (await this.cache.stats()).corrupt;
    } catch {
      // Stats are advisory; a failing stat() must not fail a signed locale.
    }
  }

  stats(): PipelineStats {
    return {
      threads: this.pool.threads,
      utilisation: this.pool.utilisation,
      queued: this.pool.queued,
      signOperations: this.counters.signOperations,
      cache: {
        hits: this.counters.hits,
        misses: this.counters.misses,
        corrupt: this.corrupt,
        bytesServed: this.counters.bytesServed,
        outputHits: this.counters.outputHits ?? 0,
        outputMisses: this.counters.outputMisses ?? 0,
      },
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
    await this.side.close();
    await this.pool.close();
  }
}
