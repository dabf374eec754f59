/**
 * A release request validated for the queue, in full before anything is enqueued: the shared schema
 * (src/release/request.ts, the same one `sign-release` reads), the profile, every path confined to the
 * configured roots (no `..`, symlinks resolved with realpath before the check), inputs present and
 * readable as a supported container (MAR or zip, by content). A request that fails any rule enqueues
 * nothing. Relative inputs and outputs are resolved against `baseDir` (the request file's directory for
 * `enqueue`, the first root for `POST /releases`).
 */
import { realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { openArchive } from '../archive/registry.js';
import type { LoadedConfig } from '../config/types.js';
import { PolicyError, UsageError } from '../errors.js';
import { FileSource } from '../io/byte-source.js';
import {
  resolveRequest,
  type ReleaseRequest,
  type ReleaseRequestErrorCode,
  type ResolvedLocale,
} from '../release/request.js';
import type { ResolvedRelease } from './types.js';

export type QueueRequestErrorCode =
  | 'RELEASE_OUTPUT_REQUIRED'
  | 'RELEASE_PROFILE_REQUIRED'
  | 'RELEASE_UNKNOWN_PROFILE'
  | 'RELEASE_PATH_ESCAPE'
  | 'RELEASE_INPUT_MISSING'
  | 'RELEASE_INPUT_NOT_FILE';

export interface ValidateOptions {
  /** Profiles that exist (config.file.profiles keys). */
  profiles: string[];
  /** Directories inputs and outputs must stay inside (absolute). */
  roots: string[];
  /** Base for relative paths in the request. */
  baseDir: string;
  /** Replaces the request's top-level `output` (`enqueue --output`). */
  output?: string;
  /** Throws a FormatError when the file is not a supported container (default: `checkContainerFile`). */
  checkContainer?: (path: string) => Promise<void>;
}

/** Roots from `server.roots` (relative to the config file), else the config file's directory. */
export function configuredRoots(config: LoadedConfig): string[] {
  const roots = config.file.server?.roots;
  if (!roots || roots.length === 0) return [config.dir];
  return roots.map((r) => resolve(config.dir, r));
}

function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

/** realpath of the nearest existing ancestor, with the missing tail appended. */
export async function realpathAllowMissing(p: string): Promise<string> {
  const tail: string[] = [];
  let cur = p;
  for (;;) {
    try {
      const real = await realpath(cur);
      return tail.length ? join(real, ...tail.reverse()) : real;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      const up = dirname(cur);
      if (up === cur) throw e;
      tail.push(basename(cur));
      cur = up;
    }
  }
}

function confine(where: string, p: string, realRoots: string[]): void {
  if (!realRoots.some((r) => inside(r, p)))
    throw new PolicyError(
      'RELEASE_PATH_ESCAPE' satisfies QueueRequestErrorCode,
      `${where} resolves to ${p}, outside the configured roots (${realRoots.join(', ')})`,
    );
}

/** The profile a request runs with: its own, else the config's only one. */
function profileOf(requested: string | undefined, profiles: string[]): string {
  const profile = requested ?? (profiles.length === 1 ? profiles[0] : undefined);
  if (profile === undefined)
    throw new UsageError(
      'RELEASE_PROFILE_REQUIRED' satisfies QueueRequestErrorCode,
      `the request names no profile and the config has ${profiles.length} (${profiles.join(', ') || 'none'})`,
    );
  if (!profiles.includes(profile))
    throw new UsageError(
      'RELEASE_UNKNOWN_PROFILE' satisfies QueueRequestErrorCode,
      `profile ${JSON.stringify(profile)} is not in the config (have: ${profiles.join(', ') || 'none'})`,
    );
  return profile;
}

/** One locale's paths, real and confined. */
async function confineLocale(l: ResolvedLocale, realRoots: string[]): Promise<ResolvedLocale> {
  const where = `locales.${l.locale}`;
  confine(`${where}.input`, l.input, realRoots);
  let input: string;
  try {
    input = await realpath(l.input);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new UsageError(
        'RELEASE_INPUT_MISSING' satisfies QueueRequestErrorCode,
        `${where}.input ${l.input} does not exist`,
      );
    throw e;
  }
  confine(`${where}.input`, input, realRoots);
  if (!(await stat(input)).isFile())
    throw new UsageError(
      'RELEASE_INPUT_NOT_FILE' satisfies QueueRequestErrorCode,
      `${where}.input ${input} is not a regular file`,
    );
  confine(`${where}.output`, l.outputDir, realRoots);
  const outputDir = await realpathAllowMissing(l.outputDir);
  confine(`${where}.output`, outputDir, realRoots);
  return { locale: l.locale, input, outputDir, output: join(outputDir, basename(input)) };
}

/**
 * Validate a parsed request (`parseReleaseRequest`) fully; throws UsageError/PolicyError/FormatError on
 * the first problem.
 */
export async function validateRelease(
  request: ReleaseRequest,
  opts: ValidateOptions,
): Promise<ResolvedRelease> {
  const profile = profileOf(request.profile, opts.profiles);
  // Where outputs go must be said (`sign-release` has -o; here: the request or --output).
  const bare = request.locales.find((l) => l.output === undefined);
  if (bare && request.output === undefined && opts.output === undefined)
    throw new UsageError(
      'RELEASE_OUTPUT_REQUIRED' satisfies QueueRequestErrorCode,
      `locales.${bare.locale} has no output, and the request has no top-level output (or pass --output)`,
    );
  const realRoots = await Promise.all(opts.roots.map((r) => realpathAllowMissing(resolve(r))));
  const check = opts.checkContainer ?? checkContainerFile;
  const locales: ResolvedLocale[] = [];
  const outputs = new Map<string, string>();
  for (const l of resolveRequest(request, opts.baseDir, opts.baseDir, opts.output)) {
    const real = await confineLocale(l, realRoots);
    // resolveRequest compared the paths as written; two locales may still meet through a symlink.
    const clash = outputs.get(real.output);
    if (clash || real.output === real.input)
      throw new UsageError(
        clash
          ? ('RELEASE_DUPLICATE_OUTPUT' satisfies ReleaseRequestErrorCode)
          : ('OUTPUT_IS_INPUT' satisfies ReleaseRequestErrorCode),
        clash
          ? `locales ${clash} and ${l.locale} both write ${real.output}`
          : `locales.${l.locale}: its output would overwrite its input ${real.input}`,
      );
    outputs.set(real.output, l.locale);
    try {
      await check(real.input);
    } catch (e) {
      if (e instanceof Error)
        Object.assign(e, { message: `locales.${l.locale}.input ${real.input}: ${e.message}` });
      throw e;
    }
    locales.push(real);
  }
  return { release: request.release, profile, locales };
}

/** The default container check: the file opens as a MAR or a zip (FormatError with the reader's code). */
export async function checkContainerFile(path: string): Promise<void> {
  const src = await FileSource.open(path);
  try {
    await openArchive(src, path);
  } finally {
    await src.close();
  }
}
