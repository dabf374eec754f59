/**
 * A whole release, in-process (embedded mode, no Redis): every locale through one Pipeline, so the
 * pool, the cache and single-flight are shared and an entry common to all locales is signed once.
 *
 * Release sources:
 * - a directory: every `*.mar` below it (recursively, sorted). The locale is the MAR's directory
 *   relative to the release root (`de/complete.mar` → `de`); a MAR directly in the root is named by
 *   its base name (`fr.mar` → `fr`). Outputs mirror the input layout under the output directory.
 * - a `release.json`: `{ "release": id, "profile": name, "locales": { "de": "de/complete.mar", ... } }`,
 *   paths relative to the JSON file. Outputs are `<outDir>/<locale>/<file name>`.
 */
import { mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ConfigError, toPlainError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { VERSION } from '../version.js';
import type { Pipeline } from './index.js';
import { manifestPath } from './locale.js';
import { sha512Sums, type ReleaseLocaleResult, type ReleaseManifest } from './manifest.js';
import type { LocaleProgress } from './types.js';

/** Limits on a release description (hostile or mistaken input). */
const MAX_RELEASE_JSON_BYTES = 4 * 1024 * 1024;
const MAX_LOCALES = 10_000;
const LOCALE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
/** Locales signed at once: their entries share the pool; two overlap one's I/O with another's signing. */
const DEFAULT_LOCALE_CONCURRENCY = 2;

export interface ReleaseSpec {
  release: string;
  profile?: string;
  /** Absolute base directory the outputs' relative paths are computed from. */
  locales: { locale: string; input: string; relOutput: string }[];
  source: string;
  kind: 'dir' | 'json';
}

export interface LoadReleaseOptions {
  /**
   * A directory never scanned for MARs: the output directory, so `-o` inside the release directory
   * does not turn last run's outputs into new locales.
   */
  excludeDir?: string;
}

export async function loadReleaseSpec(
  source: string,
  options: LoadReleaseOptions = {},
): Promise<ReleaseSpec> {
  const abs = resolve(source);
  let st;
  try {
    st = await stat(abs);
  } catch (err) {
    throw new UsageError('RELEASE_NOT_FOUND', `release ${source} not found (${toPlainError(err).code})`);
  }
  if (st.isDirectory()) {
    const mars = await findMars(
      abs,
      options.excludeDir === undefined ? undefined : resolve(options.excludeDir),
    );
    if (mars.length === 0) throw new UsageError('RELEASE_EMPTY', `no *.mar files under ${source}`);
    const seen = new Map<string, string>();
    const locales = mars.map((input) => {
      const rel = relative(abs, input);
      const dir = dirname(rel);
      const locale = dir === '.' ? basename(rel, '.mar') : dir.split(sep).join('/');
      const prev = seen.get(locale);
      if (prev)
        throw new UsageError(
          'RELEASE_DUPLICATE_LOCALE',
          `locale "${locale}" has two MARs: ${prev} and ${rel}; use a release.json to name them`,
        );
      seen.set(locale, rel);
      return { locale, input, relOutput: rel };
    });
    return { release: basename(abs), locales, source: abs, kind: 'dir' };
  }
  if (st.size > MAX_RELEASE_JSON_BYTES)
    throw new ConfigError(
      'RELEASE_BAD_JSON',
      `${source} is ${st.size} bytes; a release.json is at most ${MAX_RELEASE_JSON_BYTES}`,
    );
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(abs, 'utf8'));
  } catch (err) {
    throw new ConfigError('RELEASE_BAD_JSON', `${source} is not valid JSON: ${(err as Error).message}`);
  }
  const d = doc as { release?: unknown; profile?: unknown; locales?: unknown };
  if (typeof d !== 'object' || d === null || Array.isArray(d))
    throw new ConfigError('RELEASE_BAD_JSON', `${source} must hold a JSON object`);
  if (typeof d.release !== 'string' || d.release.length === 0 || d.release.length > 256)
    throw new ConfigError(
      'RELEASE_BAD_JSON',
      `${source}: "release" must be a non-empty string, found ${JSON.stringify(d.release)}`,
    );
  if (d.profile !== undefined && typeof d.profile !== 'string')
    throw new ConfigError(
      'RELEASE_BAD_JSON',
      `${source}: "profile" must be a string, found ${JSON.stringify(d.profile)}`,
    );
  if (typeof d.locales !== 'object' || d.locales === null || Array.isArray(d.locales))
    throw new ConfigError('RELEASE_BAD_JSON', `${source}: "locales" must be an object of locale → MAR path`);
  const entries = Object.entries(d.locales as Record<string, unknown>);
  if (entries.length === 0 || entries.length > MAX_LOCALES)
    throw new ConfigError(
      'RELEASE_BAD_JSON',
      `${source}: "locales" must list 1 to ${MAX_LOCALES} locales, found ${entries.length}`,
    );
  const base = dirname(abs);
  const locales = entries.map(([locale, p]) => {
    if (!LOCALE_PATTERN.test(locale))
      throw new ConfigError(
        'RELEASE_BAD_LOCALE',
        `${source}: locale name ${JSON.stringify(locale)} is not a plain name`,
      );
    if (typeof p !== 'string' || p.length === 0)
      throw new ConfigError(
        'RELEASE_BAD_JSON',
        `${source}: locale "${locale}" path must be a string, found ${JSON.stringify(p)}`,
      );
    const input = resolve(base, p);
    return { locale, input, relOutput: join(locale, basename(input)) };
  });
  return {
    release: d.release,
    ...(d.profile !== undefined ? { profile: d.profile } : {}),
    locales,
    source: abs,
    kind: 'json',
  };
}

async function findMars(root: string, excludeDir: string | undefined): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const d of names) {
      const p = join(dir, d.name);
      if (d.isDirectory()) {
        if (p !== excludeDir) await walk(p);
      } else if (d.isFile() && d.name.endsWith('.mar')) out.push(p);
    }
  };
  await walk(root);
  return out;
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
}

export interface SignReleaseOptions {
  pipeline: Pipeline;
  spec: ReleaseSpec;
  outDir: string;
  profile: string;
  dryRun?: boolean;
  skipInvalid?: boolean;
  /** The locale-output tier (default: the pipeline's; `--no-output-cache` turns it off). */
  outputCache?: boolean;
  /** Locales signed at once (default 2). */
  concurrency?: number;
  onProgress?: (p: ReleaseProgress) => void;
  onLocaleDone?: (r: ReleaseLocaleResult) => void;
  signal?: AbortSignal;
}

/**
 * Sign every locale. A failed locale is recorded (typed error) and the others still run; the caller
 * decides the exit status from `totals.failed`. Writes `release-manifest.json` and `SHA512SUMS`.
 */
export async function signRelease(opts: SignReleaseOptions): Promise<ReleaseManifest> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const outDir = resolve(opts.outDir);
  const concurrency = opts.concurrency ?? DEFAULT_LOCALE_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UsageError('BAD_CONCURRENCY', `concurrency must be a positive integer, found ${concurrency}`);
  for (const l of opts.spec.locales) {
    const out = resolve(outDir, l.relOutput);
    if (out === l.input)
      throw new UsageError('OUTPUT_IS_INPUT', `output ${out} would overwrite input of locale ${l.locale}`);
  }
  // Validate the profile once up front so a bad profile is one error, not one per locale.
  await opts.pipeline.profile(opts.profile);
  if (!opts.dryRun) await mkdir(outDir, { recursive: true });

  const progress: ReleaseProgress = {
    localesDone: 0,
    localesTotal: opts.spec.locales.length,
    current: {},
    entriesDone: 0,
    entriesTotal: 0,
    bytesDone: 0,
    hits: 0,
    misses: 0,
  };
  // Plan every locale first and sign the release's unique misses largest first (an unreadable locale
  // is skipped here and fails below with its own typed error).
  const plan = opts.dryRun
    ? undefined
    : await opts.pipeline.plan(
        opts.profile,
        opts.spec.locales.map((l) => l.input),
        opts.signal,
        {
          skipInvalid: opts.skipInvalid === true,
          ...(opts.outputCache !== undefined ? { outputCache: opts.outputCache } : {}),
        },
      );
  const results: ReleaseLocaleResult[] = new Array(opts.spec.locales.length);
  let nextIndex = 0;
  const runOne = async (): Promise<void> => {
    for (;;) {
      const i = nextIndex++;
      const l = opts.spec.locales[i];
      if (!l) return;
      const output = resolve(outDir, l.relOutput);
      const t = performance.now();
      let doneBefore = { entries: 0, bytes: 0, hits: 0, misses: 0 };
      try {
        if (!opts.dryRun) await mkdir(dirname(output), { recursive: true });
        const m = await opts.pipeline.signLocale({
          profile: opts.profile,
          input: l.input,
          output,
          dryRun: opts.dryRun === true,
          skipInvalid: opts.skipInvalid === true,
          ...(opts.outputCache !== undefined ? { outputCache: opts.outputCache } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(plan ? { plan } : {}),
          onProgress: (p) => {
            if (doneBefore.entries === 0 && p.entriesDone === 1) progress.entriesTotal += p.entriesTotal;
            progress.entriesDone += p.entriesDone - doneBefore.entries;
            progress.bytesDone += p.bytesDone - doneBefore.bytes;
            progress.hits += p.hits - doneBefore.hits;
            progress.misses += p.misses - doneBefore.misses;
            doneBefore = { entries: p.entriesDone, bytes: p.bytesDone, hits: p.hits, misses: p.misses };
            progress.current[l.locale] = p;
            opts.onProgress?.({ ...progress, current: { ...progress.current } });
          },
        });
        results[i] = {
          locale: l.locale,
          input: l.input,
          output,
          ...(opts.dryRun ? {} : { manifest: manifestPath(output) }),
          ok: true,
          ...(m.output_sha256 ? { outputSha256: m.output_sha256 } : {}),
          ...(m.output_sha512 ? { outputSha512: m.output_sha512 } : {}),
          ...(m.outputSize !== undefined ? { outputSize: m.outputSize } : {}),
          totals: m.totals,
          ...(m.outputCache ? { outputCache: m.outputCache } : {}),
          ...(m.warnings?.length ? { warnings: m.warnings.length } : {}),
          ms: performance.now() - t,
        };
      } catch (err) {
        results[i] = {
          locale: l.locale,
          input: l.input,
          output,
          ok: false,
          error: toPlainError(err),
          ms: performance.now() - t,
        };
      }
      delete progress.current[l.locale];
      progress.localesDone++;
      opts.onProgress?.({ ...progress, current: { ...progress.current } });
      opts.onLocaleDone?.(results[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, opts.spec.locales.length) }, runOne));

  const sum = (f: (r: ReleaseLocaleResult) => number): number => results.reduce((n, r) => n + f(r), 0);
  const hits = sum((r) => r.totals?.hits ?? 0);
  const misses = sum((r) => r.totals?.misses ?? 0);
  const manifest: ReleaseManifest = {
    marsignVersion: VERSION,
    release: opts.spec.release,
    profile: opts.profile,
    source: opts.spec.source,
    outDir,
    dryRun: opts.dryRun === true,
    locales: results,
    totals: {
      locales: results.length,
      failed: results.filter((r) => !r.ok).length,
      entries: sum((r) => r.totals?.entries ?? 0),
      signed: misses,
      hits,
      passthrough: sum((r) => r.totals?.passthrough ?? 0),
      skippedInvalid: sum((r) => r.totals?.skippedInvalid ?? 0),
      signOperations: sum((r) => r.totals?.signOperations ?? 0),
      inputBytes: sum((r) => r.totals?.inputBytes ?? 0),
      outputBytes: sum((r) => r.totals?.outputBytes ?? 0),
      cacheHitRate: hits + misses === 0 ? 0 : hits / (hits + misses),
      outputHits: results.filter((r) => r.outputCache === 'hit').length,
    },
    timings: { startedAt, ms: performance.now() - started },
  };
  if (!opts.dryRun) {
    await writeFileAtomic(join(outDir, 'release-manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    const rows = results
      .filter((r) => r.ok && r.outputSha512)
      .map((r) => ({ sha512: r.outputSha512!, relPath: relative(outDir, r.output).split(sep).join('/') }));
    await writeFileAtomic(join(outDir, 'SHA512SUMS'), sha512Sums(rows));
  }
  return manifest;
}
