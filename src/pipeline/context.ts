/**
 * What the stages of a locale run share: the signing context (one per profile, for every locale a
 * pipeline signs) and the run ledger (one per run: a locale signed alone, or a whole release), which
 * remembers what this run produced so each entry's manifest action says what happened to it here.
 */
import type { CacheStore, DecodedFacts } from '../../cache/types.js';
import type { AuditSink } from '../audit/types.js';
import type { LoadedConfig, SigningProfile } from '../config/types.js';
import type { MemoryBudget } from './budget.js';
import type { PassthroughChecks } from './check-flight.js';
import type { HotEntries } from './hot.js';
import type { CompiledPolicy } from './policy.js';
import type { SigningPool } from './pool.js';
import type { SideHasher } from './side-hash.js';
import type { Coordinator, EntryAction } from './types.js';
import { WorkMeter } from './work.js';

export interface PipelineCounters {
  /** New Authenticode signatures made. */
  signOperations: number;
  /** Signable entries served without work here (cache, or joined another locale's work). */
  hits: number;
  /** Signable entries produced by this process's work. */
  misses: number;
  bytesServed: number;
  /** Locales served whole by the locale-output tier / looked up there and not found. */
  outputHits: number;
  outputMisses: number;
  /** Passthrough entries decoded to check them / found checked already (a cache marker, this process). */
  passthroughDecoded: number;
  passthroughCached: number;
}

export function newCounters(): PipelineCounters {
  return {
    signOperations: 0,
    hits: 0,
    misses: 0,
    bytesServed: 0,
    outputHits: 0,
    outputMisses: 0,
    passthroughDecoded: 0,
    passthroughCached: 0,
  };
}

export interface SigningContext {
  readonly config: LoadedConfig;
  readonly profile: SigningProfile;
  readonly policy: CompiledPolicy;
  readonly pool: SigningPool;
  readonly store: CacheStore | null;
  readonly coordinator: Coordinator;
  /** The hashing thread shared by the pipeline's locales (started with the pipeline). */
  readonly side: SideHasher;
  readonly counters: PipelineCounters;
  /** Default of the locale-output tier (config `cache.outputs`, default true). */
  readonly outputTier: boolean;
  /** Passthrough checks in flight and passed in this process (one per pipeline). */
  readonly checks: PassthroughChecks;
  /** The big buffers of every locale this pipeline runs are leased from here (budget.ts). */
  readonly budget: MemoryBudget;
  /** Signed entries served more than once, kept in memory under the budget (hot.ts); absent without a store. */
  readonly hot?: HotEntries;
  /** Where each signed locale's audit records go (src/audit); none: not audited (library use). */
  readonly audit?: AuditSink;
}

/** The signed bytes of one entry key, as a single-flight slot resolves. */
export interface Produced {
  bytes: Uint8Array;
  /** Hex sha256 of `bytes`, from the worker or the cache's verification (saves hashing them again). */
  sha256?: string;
  /** What `bytes` decode to (zip headers need it). */
  facts?: DecodedFacts;
  /** A non-fatal problem (the cache put failed), recorded by the locale the work is attributed to. */
  warning?: string;
  /** The timestamp authority of the signature in `bytes`, when this process's work knows it (audit). */
  tsa?: string;
}

/** What this run's work did for one entry key. */
interface Production {
  /** Whether it made a new signature (else it applied one found in this run, or in the cache). */
  made: boolean;
  /** Where an applied signature came from. */
  signatureFrom?: 'run' | 'cache';
  /** The input the work is attributed to: the first locale (in run order) that holds the key. */
  owner: string;
  /** Set once that locale recorded it: later uses of the key are `shared`. */
  recorded: boolean;
  /** The bytes, kept only when they could not be stored in the cache (else they are read from it). */
  held?: Produced;
  warning?: string;
  /** The timestamp authority of the signature the work applied, when known (audit). */
  tsa?: string;
}

/**
 * What one run (a locale alone, or a release) produced, by entry key: small records (no bytes unless a
 * cache put failed), so attribution does not depend on which locale reached an entry first or on whether
 * the single-flight slot was still open.
 */
export class RunLedger {
  /** Signing work in flight per owner (pool progress within entries, work.ts). */
  readonly work = new WorkMeter();
  private readonly byKey = new Map<string, Production>();
  /** PE signature keys whose signature this run's work made → the timestamp authority it used ('' none). */
  private readonly madeSignatures = new Map<string, string>();
  /** Signatures made by this run's work (the manifest totals must add up to this). */
  signatures = 0;

  /** A PE signature this run made (stored under `key`): later users of it were served in this run. */
  signatureMade(key: string, tsa?: string): void {
    this.madeSignatures.set(key, tsa ?? '');
  }

  /** The timestamp authority of a signature this run made, when it had one. */
  signatureTsa(key: string): string | undefined {
    return this.madeSignatures.get(key) || undefined;
  }

  /** Where a PE signature found under `key` comes from: this run, or an earlier one. */
  signatureSource(key: string): 'run' | 'cache' {
    return this.madeSignatures.has(key) ? 'run' : 'cache';
  }

  recordWork(
    key: string,
    owner: string,
    outcome: { made: boolean; signatureFrom?: 'run' | 'cache'; produced: Produced; stored: boolean },
  ): void {
    if (outcome.made) this.signatures++;
    this.byKey.set(key, {
      made: outcome.made,
      ...(outcome.signatureFrom ? { signatureFrom: outcome.signatureFrom } : {}),
      owner,
      recorded: false,
      ...(outcome.stored ? {} : { held: outcome.produced }),
      ...(outcome.produced.warning ? { warning: outcome.produced.warning } : {}),
      ...(outcome.produced.tsa ? { tsa: outcome.produced.tsa } : {}),
    });
  }

  /** The cache took the bytes of `key`: they are read from it from now on. */
  stored(key: string): void {
    const p = this.byKey.get(key);
    if (p) delete p.held;
  }

  /** The cache could not take the bytes of `key`: they stay held, and the owner records why. */
  storeFailed(key: string, warning: string): void {
    const p = this.byKey.get(key);
    if (p) p.warning = warning;
  }

  /** Bytes this run produced for `key` that the cache could not take (or has not taken yet). */
  held(key: string): Produced | undefined {
    return this.byKey.get(key)?.held;
  }

  /** Whether this run's work produced `key`. */
  produced(key: string): boolean {
    return this.byKey.has(key);
  }

  /**
   * The action of an entry of `input` whose bytes for `key` it now has, and the warning it records (only
   * the owner records a failed cache put). The owner's first use takes the work's own action; every
   * other use is `shared`; a key this run did not produce came from the cache.
   */
  actionFor(key: string, input: string): { action: EntryAction; warning?: string; tsa?: string } {
    const p = this.byKey.get(key);
    if (!p) return { action: 'cached' };
    const tsa = p.tsa ? { tsa: p.tsa } : {};
    if (p.owner !== input || p.recorded) return { action: 'shared', ...tsa };
    p.recorded = true;
    const action: EntryAction = p.made ? 'signed' : p.signatureFrom === 'cache' ? 'cached' : 'shared';
    return { action, ...(p.warning ? { warning: p.warning } : {}), ...tsa };
  }
}
