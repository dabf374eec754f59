/**
 * A whole release, in-process (embedded mode, no Redis): every locale through one signer (a Pipeline),
 * so the pool, the cache and single-flight are shared and an entry common to all locales is signed once.
 * The release is planned (plan.ts: every input's keys, the unique misses scheduled largest first) while
 * the locales run `concurrency` at a time, each once its input is planned, sharing one run ledger, so
 * each entry's action says what happened to it in this run and the locales' `signed` totals add up to the
 * signatures made.
 */
import { mkdir, stat, unlink } from 'node:fs/promises';
import { basename, join, relative, resolve, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import { toPlainError, UsageError, type PlainError } from '../errors.js';
import { removeStaleTemps, writeFileAtomic } from '../io/atomic.js';
import type { ResolvedLocale } from '../release/request.js';
import { VERSION } from '../version.js';
import { RunLedger } from './context.js';
import type { SignLocaleOptions } from './locale.js';
import { sha512Sums } from './manifest.js';
import type { ReleasePlan } from './plan.js';
import { manifestPath } from './report.js';
import type { LocaleManifest, LocaleProgress, LocaleTotals, PipelineErrorCode } from './types.js';

/**
 * Locales signed at once: their entries share the pool, and one's I/O waits (its fsyncs, the audit
 * record's) overlap the others' work. Three, not two: a warm 100-locale release took 9.0 s instead of
 * 9.9 (entry cache only) and 5.4 s instead of 6.4 (served whole), medians of 3–4 runs (BENCHMARKS "Scale").
 */
export const DEFAULT_LOCALE_CONCURRENCY = 3;
/** The release's own files in its output directory, written last (after every locale). */
const RELEASE_FILES = ['release-manifest.json', 'SHA512SUMS'] as const;

/** How a release is planned (`LocaleSigner.plan`). */
export interface PlanOptions {
  outputCache?: boolean;
  skipInvalid?: boolean;
  verifyPassthrough?: boolean;
  /** Told each input once it is planned, with the plan so far (plan.ts `planRelease`). */
  onPlanned?: (input: string, plan: ReleasePlan) => void;
}

/** What signRelease needs from the pipeline (so this module does not depend on its class). */
export interface LocaleSigner {
  /** Load (and check) a profile. */
  profile(name: string): Promise<unknown>;
  plan(
    profile: string,
    inputs: string[],
    ledger: RunLedger,
    signal?: AbortSignal,
    options?: PlanOptions,
  ): Promise<ReleasePlan>;
  signLocale(options: SignLocaleOptions & { ledger?: RunLedger }): Promise<LocaleManifest>;
}

/** One locale's line in the release report. */
export interface ReleaseLocaleReport {
  locale: string;
  input: string;
  output: string;
  /** Path of the locale manifest. */
  manifest?: string;
  ok: boolean;
  error?: PlainError;
  outputSha256?: string;
  outputSha512?: string;
  outputSize?: number;
  totals?: LocaleTotals;
  /** The locale-output tier's answer for this locale (absent when the tier was off). */
  outputCache?: 'hit' | 'miss';
  /** Whether every passthrough entry of the locale was checked before it was signed (locale manifest). */
  passthroughVerified?: boolean;
  /** Number of non-fatal warnings in the locale manifest. */
  warnings?: number;
  ms?: number;
}

/** The release report (`release-manifest.json`). */
export interface ReleaseReport {
  marsignVersion: string;
  release: string;
  profile: string;
  source: string;
  outDir: string;
  dryRun: boolean;
  locales: ReleaseLocaleReport[];
  totals: {
    locales: number;
    failed: number;
    entries: number;
    /** Entries signed (= signOperations: every signature made in this run, counted once). */
    signed: number;
    shared: number;
    cached: number;
    /** shared + cached (older name). */
    hits: number;
    passthrough: number;
    skippedInvalid: number;
    signOperations: number;
    inputBytes: number;
    outputBytes: number;
    /** hits / (hits + signed), 0 when nothing was signable. */
    cacheHitRate: number;
    /** Locales served whole by the locale-output tier. */
    outputHits?: number;
  };
  timings: { startedAt: string; ms: number };
}

export interface ReleaseProgress {
  localesDone: number;
  localesTotal: number;
  /** Per running locale. */
  current: Record<string, LocaleProgress>;
  entriesDone: number;
  entriesTotal: number;
  bytesDone: number;
  hits: number;
  misses: number;
  /** Size of every locale's input file (measured before signing; an unreadable one counts 0). */
  inputBytesTotal: number;
  /** Size of the input files of the locales finished (signed or failed). */
  inputBytesDone: number;
}

export interface SignReleaseOptions {
  signer: LocaleSigner;
  release: string;
  /** Where the request came from (a directory or a request file), for the report. */
  source: string;
  locales: ResolvedLocale[];
  /** The release's output directory (release-manifest.json, SHA512SUMS). */
  outDir: string;
  profile: string;
  dryRun?: boolean;
  skipInvalid?: boolean;
  /** Check passthrough entries before signing (default: the policy's `verifyPassthrough`, true). */
  verifyPassthrough?: boolean;
  /** The locale-output tier (default: the pipeline's; `--no-output-cache` turns it off). */
  outputCache?: boolean;
  /** Locales signed at once (default 3). */
  concurrency?: number;
  onProgress?: (p: ReleaseProgress) => void;
  onLocaleDone?: (r: ReleaseLocaleReport) => void;
  signal?: AbortSignal;
  /** Who asked (audit records): an API client, or `cli:<user>`. */
  client?: string;
}

/**
 * Sign every locale. A failed locale is recorded (typed error) and the others still run; the caller
 * decides the exit status from `totals.failed`. Writes `release-manifest.json` and `SHA512SUMS`.
 */
export async function signRelease(opts: SignReleaseOptions): Promise<ReleaseReport> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const outDir = resolve(opts.outDir);
  const concurrency = opts.concurrency ?? DEFAULT_LOCALE_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UsageError(
      'BAD_CONCURRENCY' satisfies PipelineErrorCode,
      `concurrency must be a positive integer, found ${concurrency}`,
    );
  // Validate the profile once up front so a bad profile is one error, not one per locale.
  await opts.signer.profile(opts.profile);
  if (!opts.dryRun) await mkdir(outDir, { recursive: true });
  const ledger = new RunLedger();
  const sizes = opts.onProgress ? await inputSizes(opts.locales) : new Map<string, number>();
  const progress = new ProgressTally(opts.locales.length, opts.onProgress, sizes);
  progress.start();
  // Plan every locale and sign the release's unique misses in scheduling order; a locale starts as soon
  // as its own input is planned, while the others are still being read and hashed (an unreadable locale
  // is left out of the plan and fails below with its own typed error).
  const planning = opts.dryRun ? undefined : new PlanTracker(opts, ledger);
  // A killed run must not leave sums (or a report) that list digests of outputs it has since replaced:
  // they go before the first output is touched (once the first locale's input is planned: a plan that
  // fails before leaves them as they were) and are written again at the end. Temps of earlier runs that
  // were killed go too (those of live processes stay).
  let clearing: Promise<void> | undefined;
  const clearReleaseFiles = (): Promise<void> =>
    (clearing ??= (async () => {
      await removeStaleTemps(outDir, { names: RELEASE_FILES });
      for (const name of RELEASE_FILES)
        await unlink(join(outDir, name)).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') throw e;
        });
    })());
  const results: ReleaseLocaleReport[] = new Array(opts.locales.length);
  let nextIndex = 0;
  const runOne = async (): Promise<void> => {
    for (let i = nextIndex++; i < opts.locales.length; i = nextIndex++) {
      const l = opts.locales[i]!;
      const plan = await planning?.ready(l.input);
      // A plan that failed fails the release (below); no locale starts after it.
      if (planning?.failed) return;
      if (!opts.dryRun) await clearReleaseFiles();
      results[i] = await signOne(opts, l, ledger, plan, progress);
      progress.localeDone(l.locale);
      opts.onLocaleDone?.(results[i]!);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, opts.locales.length) }, runOne));
  } catch (err) {
    // A runner failed (the release files could not be removed): planning stops now, and this error, not
    // a later one of the plan's, is the release's.
    planning?.stop(err);
    await planning?.settled().catch(() => undefined);
    throw err;
  }
  // Planning never outlives the release (its error, if any, is the release's).
  await planning?.settled();
  const report = releaseReport(opts, outDir, results, startedAt, performance.now() - started);
  if (!opts.dryRun) {
    await writeFileAtomic(join(outDir, 'release-manifest.json'), JSON.stringify(report, null, 2) + '\n');
    const rows = results
      .filter((r) => r.ok && r.outputSha512)
      .map((r) => ({ sha512: r.outputSha512!, relPath: relative(outDir, r.output).split(sep).join('/') }));
    await writeFileAtomic(join(outDir, 'SHA512SUMS'), sha512Sums(rows));
  }
  return report;
}

/**
 * The release plan while it is being made: `ready(input)` resolves (with the plan so far) once that input
 * is planned, or once planning ended; `settled()` rethrows a planning error after the running locales end.
 */
class PlanTracker {
  private plan: ReleasePlan | undefined;
  private readonly waiting = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  private readonly done: Promise<void>;
  private error: { err: unknown } | undefined;

  /** Stops planning (between inputs) when the release fails, or when the caller's signal aborts. */
  private readonly stopping = new AbortController();

  constructor(opts: SignReleaseOptions, ledger: RunLedger) {
    for (const l of opts.locales) {
      if (this.waiting.has(l.input)) continue;
      let resolve: () => void = () => undefined;
      const promise = new Promise<void>((r) => (resolve = r));
      this.waiting.set(l.input, { promise, resolve });
    }
    this.done = opts.signer
      .plan(
        opts.profile,
        opts.locales.map((l) => l.input),
        ledger,
        opts.signal ? AbortSignal.any([opts.signal, this.stopping.signal]) : this.stopping.signal,
        {
          skipInvalid: opts.skipInvalid === true,
          ...(opts.verifyPassthrough !== undefined ? { verifyPassthrough: opts.verifyPassthrough } : {}),
          ...(opts.outputCache !== undefined ? { outputCache: opts.outputCache } : {}),
          onPlanned: (input, plan) => {
            this.plan = plan;
            this.waiting.get(input)?.resolve();
          },
        },
      )
      .then(
        (plan) => void (this.plan = plan),
        (err: unknown) => void (this.error = { err }),
      )
      .finally(() => {
        for (const w of this.waiting.values()) w.resolve();
      });
  }

  stop(reason: unknown): void {
    this.stopping.abort(reason);
  }

  get failed(): boolean {
    return this.error !== undefined;
  }

  async ready(input: string): Promise<ReleasePlan | undefined> {
    await (this.waiting.get(input)?.promise ?? this.done);
    return this.plan;
  }

  async settled(): Promise<void> {
    await this.done;
    if (this.error) throw this.error.err;
  }
}

async function signOne(
  opts: SignReleaseOptions,
  l: ResolvedLocale,
  ledger: RunLedger,
  plan: ReleasePlan | undefined,
  progress: ProgressTally,
): Promise<ReleaseLocaleReport> {
  const t = performance.now();
  try {
    if (!opts.dryRun) {
      await mkdir(l.outputDir, { recursive: true });
      const name = basename(l.output);
      await removeStaleTemps(l.outputDir, { names: [name, `${name}.manifest.json`] });
    }
    const m = await opts.signer.signLocale({
      profile: opts.profile,
      input: l.input,
      output: l.output,
      ledger,
      dryRun: opts.dryRun === true,
      skipInvalid: opts.skipInvalid === true,
      ...(opts.verifyPassthrough !== undefined ? { verifyPassthrough: opts.verifyPassthrough } : {}),
      ...(opts.outputCache !== undefined ? { outputCache: opts.outputCache } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(plan ? { plan } : {}),
      release: opts.release,
      locale: l.locale,
      ...(opts.client !== undefined ? { client: opts.client } : {}),
      onProgress: (p) => progress.update(l.locale, p),
    });
    return {
      locale: l.locale,
      input: l.input,
      output: l.output,
      ...(opts.dryRun ? {} : { manifest: manifestPath(l.output) }),
      ok: true,
      ...(m.outputSha256 ? { outputSha256: m.outputSha256 } : {}),
      ...(m.outputSha512 ? { outputSha512: m.outputSha512 } : {}),
      ...(m.outputSize !== undefined ? { outputSize: m.outputSize } : {}),
      totals: m.totals,
      ...(m.outputCache ? { outputCache: m.outputCache } : {}),
      passthroughVerified: m.passthroughVerified,
      ...(m.warnings?.length ? { warnings: m.warnings.length } : {}),
      ms: performance.now() - t,
    };
  } catch (err) {
    return {
      locale: l.locale,
      input: l.input,
      output: l.output,
      ok: false,
      error: toPlainError(err),
      ms: performance.now() - t,
    };
  }
}

/** The release report over its locales' results (sign-release, and `--remote`'s report of the same shape). */
export function releaseReport(
  opts: Pick<SignReleaseOptions, 'release' | 'profile' | 'source' | 'dryRun'>,
  outDir: string,
  results: ReleaseLocaleReport[],
  startedAt: string,
  ms: number,
): ReleaseReport {
  const sum = (f: (t: LocaleTotals) => number): number =>
    results.reduce((n, r) => n + (r.totals ? f(r.totals) : 0), 0);
  const signed = sum((t) => t.signed);
  const hits = sum((t) => t.hits);
  return {
    marsignVersion: VERSION,
    release: opts.release,
    profile: opts.profile,
    source: opts.source,
    outDir,
    dryRun: opts.dryRun === true,
    locales: results,
    totals: {
      locales: results.length,
      failed: results.filter((r) => !r.ok).length,
      entries: sum((t) => t.entries),
      signed,
      shared: sum((t) => t.shared),
      cached: sum((t) => t.cached),
      hits,
      passthrough: sum((t) => t.passthrough),
      skippedInvalid: sum((t) => t.skippedInvalid),
      signOperations: sum((t) => t.signOperations),
      inputBytes: sum((t) => t.inputBytes),
      outputBytes: sum((t) => t.outputBytes),
      cacheHitRate: hits + signed === 0 ? 0 : hits / (hits + signed),
      outputHits: results.filter((r) => r.outputCache === 'hit').length,
    },
    timings: { startedAt, ms },
  };
}

/** The release's progress, summed over its locales as they report. */
class ProgressTally {
  private readonly p: ReleaseProgress;
  private readonly seen = new Map<string, LocaleProgress>();

  constructor(
    locales: number,
    private readonly onProgress: ((p: ReleaseProgress) => void) | undefined,
    private readonly sizes: ReadonlyMap<string, number>,
  ) {
    this.p = {
      inputBytesTotal: [...sizes.values()].reduce((n, s) => n + s, 0),
      inputBytesDone: 0,
      localesDone: 0,
      localesTotal: locales,
      current: {},
      entriesDone: 0,
      entriesTotal: 0,
      bytesDone: 0,
      hits: 0,
      misses: 0,
    };
  }

  update(locale: string, now: LocaleProgress): void {
    const before = this.seen.get(locale);
    // A locale first reports while planning (no entries yet): its total arrives with a later report.
    this.p.entriesTotal += now.entriesTotal - (before?.entriesTotal ?? 0);
    this.p.entriesDone += now.entriesDone - (before?.entriesDone ?? 0);
    this.p.bytesDone += now.bytesDone - (before?.bytesDone ?? 0);
    this.p.hits += now.hits - (before?.hits ?? 0);
    this.p.misses += now.misses - (before?.misses ?? 0);
    this.seen.set(locale, now);
    this.p.current[locale] = now;
    this.emit();
  }

  localeDone(locale: string): void {
    delete this.p.current[locale];
    this.p.localesDone++;
    this.p.inputBytesDone += this.sizes.get(locale) ?? 0;
    this.emit();
  }

  /** The first report, before any locale has: the display shows the release at once. */
  start(): void {
    this.emit();
  }

  private emit(): void {
    this.onProgress?.({ ...this.p, current: { ...this.p.current } });
  }
}

/** Each locale's input size, for the progress display's totals (a file that cannot be read counts 0). */
async function inputSizes(locales: readonly ResolvedLocale[]): Promise<Map<string, number>> {
  const sizes = await Promise.all(
    locales.map((l) =>
      stat(l.input).then(
        (s) => s.size,
        () => 0,
      ),
    ),
  );
  return new Map(locales.map((l, i) => [l.locale, sizes[i]!]));
}
