/**
 * Release manifest validation, done in full before anything is enqueued: schema, ids, every path
 * confined to the configured roots (no `..`, symlinks resolved with realpath before the check), inputs
 * present and parseable as MARs. A manifest that fails any rule enqueues nothing.
 *
 * ```json
 * { "release": "fx-120.0-build1", "profile": "dev", "output": "out",
 *   "locales": { "de": { "input": "in/de/complete.mar", "output": "signed/de" }, "fr": "in/fr/complete.mar" } }
 * ```
 * A locale is `{ input, output? }` or just the input path (the `sign-release` release.json form); its
 * output directory defaults to `<output>/<locale>`. Relative paths are resolved against `baseDir`
 * (the manifest file's directory for `enqueue`, the first root for `POST /releases`). The signed MAR
 * is `<output dir>/<basename(input)>`.
 */
import { realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { PolicyError, UsageError } from '../errors.js';
import { readMar } from '../formats/mar/index.js';
import { FileSource } from '../io/byte-source.js';
import type { LoadedConfig } from '../config/types.js';
import type { ReleaseLocale, ReleaseManifest } from './types.js';

export const MAX_LOCALES = 500;
export const MAX_PATH_LENGTH = 4096;
/** BullMQ job ids may not contain ':' and may not be integers; `@` joins release and locale. */
export const RELEASE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** Mozilla locale codes: `de`, `en-US`, `ja-JP-mac`, `ca-valencia`. */
export const LOCALE_RE = /^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$/;
export const PROFILE_RE = /^[A-Za-z0-9_-]{1,64}$/;

export interface ValidateOptions {
  /** Profiles that exist (config.file.profiles keys). */
  profiles: string[];
  /** Directories inputs and outputs must stay inside (absolute). */
  roots: string[];
  /** Base for relative paths in the manifest. */
  baseDir: string;
  /** Throws a FormatError when the file is not a MAR (src/formats/mar readMar on a FileSource). */
  checkMar: (path: string) => Promise<void>;
}

/** Roots from `server.roots` (relative to the config file), else the config file's directory. */
export function configuredRoots(config: LoadedConfig): string[] {
  const roots = config.file.server?.roots;
  if (!roots || roots.length === 0) return [config.dir];
  return roots.map((r) => resolve(config.dir, r));
}

function schemaError(message: string, details?: Record<string, unknown>): UsageError {
  return new UsageError('MANIFEST_SCHEMA', message, details ? { details } : {});
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(where: string, obj: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k))
      throw schemaError(
        `${where} has an unknown field ${JSON.stringify(k)} (allowed: ${allowed.join(', ')})`,
      );
  }
}

function pathField(where: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0)
    throw schemaError(`${where} must be a non-empty string, found ${JSON.stringify(v)}`);
  if (v.length > MAX_PATH_LENGTH)
    throw schemaError(`${where} is longer than ${MAX_PATH_LENGTH} characters (${v.length})`);
  if (v.includes('\0')) throw schemaError(`${where} contains a NUL byte`);
  // Reject `..` outright rather than normalising it away: a manifest that climbs is a mistake or an attack.
  if (v.split(/[\\/]/).includes('..')) {
    throw new PolicyError(
      'MANIFEST_PATH_TRAVERSAL',
      `${where} contains a '..' segment: ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** Parse and check the shape only (no filesystem access). */
export function parseManifestShape(doc: unknown): {
  release: string;
  profile: string;
  locales: { locale: string; input: string; output: string }[];
} {
  if (!isRecord(doc))
    throw schemaError(
      `the manifest must be a JSON object, found ${Array.isArray(doc) ? 'an array' : typeof doc}`,
    );
  checkKeys('the manifest', doc, ['release', 'profile', 'output', 'locales']);
  const { release, profile, locales } = doc;
  if (typeof release !== 'string' || !RELEASE_ID_RE.test(release) || /^\d+$/.test(release)) {
    throw schemaError(
      `release must match ${RELEASE_ID_RE} and not be all digits, found ${JSON.stringify(release)}`,
    );
  }
  if (typeof profile !== 'string' || !PROFILE_RE.test(profile)) {
    throw schemaError(`profile must match ${PROFILE_RE}, found ${JSON.stringify(profile)}`);
  }
  const output = doc.output === undefined ? undefined : pathField('output', doc.output);
  if (!isRecord(locales))
    throw schemaError(
      `locales must be an object of locale → { input, output }, found ${JSON.stringify(locales)}`,
    );
  const names = Object.keys(locales);
  if (names.length === 0) throw schemaError('locales is empty');
  if (names.length > MAX_LOCALES)
    throw schemaError(`locales has ${names.length} entries, more than ${MAX_LOCALES}`);
  const out = names.map((locale) => {
    if (!LOCALE_RE.test(locale))
      throw schemaError(`locale ${JSON.stringify(locale)} does not match ${LOCALE_RE}`);
    let l = locales[locale];
    if (typeof l === 'string') l = { input: l };
    if (!isRecord(l))
      throw schemaError(
        `locales.${locale} must be an input path or { input, output }, found ${JSON.stringify(l)}`,
      );
    checkKeys(`locales.${locale}`, l, ['input', 'output']);
    const input = pathField(`locales.${locale}.input`, l.input);
    let dir: string;
    if (l.output !== undefined) dir = pathField(`locales.${locale}.output`, l.output);
    else if (output !== undefined) dir = join(output, locale);
    else throw schemaError(`locales.${locale} has no output, and the manifest has no top-level output`);
    return { locale, input, output: dir };
  });
  return { release, profile, locales: out };
}

function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

/** realpath of the nearest existing ancestor, with the missing tail appended. */
async function realpathAllowMissing(p: string): Promise<string> {
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

async function confine(where: string, p: string, realRoots: string[]): Promise<void> {
  if (!realRoots.some((r) => inside(r, p))) {
    throw new PolicyError(
      'MANIFEST_PATH_ESCAPE',
      `${where} resolves to ${p}, outside the configured roots (${realRoots.join(', ')})`,
    );
  }
}

/** Validate a manifest document fully; throws UsageError/PolicyError/FormatError on the first problem. */
export async function validateManifest(doc: unknown, opts: ValidateOptions): Promise<ReleaseManifest> {
  const shape = parseManifestShape(doc);
  if (!opts.profiles.includes(shape.profile)) {
    throw new UsageError(
      'MANIFEST_UNKNOWN_PROFILE',
      `profile ${JSON.stringify(shape.profile)} is not in the config (have: ${opts.profiles.join(', ') || 'none'})`,
    );
  }
  const realRoots = await Promise.all(opts.roots.map((r) => realpathAllowMissing(resolve(r))));
  const locales: ReleaseLocale[] = [];
  const outputs = new Map<string, string>();
  for (const l of shape.locales) {
    const inputAbs = resolve(opts.baseDir, l.input);
    await confine(`locales.${l.locale}.input`, inputAbs, realRoots);
    let input: string;
    try {
      input = await realpath(inputAbs);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new UsageError(
          'MANIFEST_INPUT_MISSING',
          `locales.${l.locale}.input ${inputAbs} does not exist`,
        );
      }
      throw e;
    }
    await confine(`locales.${l.locale}.input`, input, realRoots);
    const st = await stat(input);
    if (!st.isFile())
      throw new UsageError(
        'MANIFEST_INPUT_NOT_FILE',
        `locales.${l.locale}.input ${input} is not a regular file`,
      );

    const outAbs = resolve(opts.baseDir, l.output);
    await confine(`locales.${l.locale}.output`, outAbs, realRoots);
    const outputDir = await realpathAllowMissing(outAbs);
    await confine(`locales.${l.locale}.output`, outputDir, realRoots);
    const output = join(outputDir, basename(input));
    if (output === input) {
      throw new UsageError(
        'MANIFEST_OUTPUT_IS_INPUT',
        `locales.${l.locale}.output would overwrite its input ${input}`,
      );
    }
    const clash = outputs.get(output);
    if (clash) {
      throw new UsageError('MANIFEST_OUTPUT_CLASH', `locales ${clash} and ${l.locale} both write ${output}`);
    }
    outputs.set(output, l.locale);
    try {
      await opts.checkMar(input);
    } catch (e) {
      if (e instanceof Error)
        Object.assign(e, { message: `locales.${l.locale}.input ${input}: ${e.message}` });
      throw e;
    }
    locales.push({ locale: l.locale, input, outputDir, output });
  }
  return { release: shape.release, profile: shape.profile, locales };
}

/** The default `checkMar`: the file parses as a MAR (FormatError with the reader's code otherwise). */
export async function checkMarFile(path: string): Promise<void> {
  const src = await FileSource.open(path);
  try {
    await readMar(src);
  } finally {
    await src.close();
  }
}
