/**
 * The release request: what release automation submits, one schema for `sign-release`, `enqueue` and
 * `POST /releases` (docs/ARCHITECTURE.md "Release request"). A file that one accepts, all accept.
 *
 * ```json
 * { "release": "fx-128.0-build1", "profile": "release", "output": "signed",
 *   "locales": { "de": "de/complete.mar",
 *                "fr": { "input": "fr/complete.mar", "output": "signed/fr" },
 *                "win64": "target.zip" } }
 * ```
 * A locale (any container: MAR or zip, by content) is an input path or `{ input, output? }`. Inputs are
 * relative to the request file's directory (`POST /releases`: the first configured root). Outputs: a
 * locale's `output` is a directory, relative to the output base — the request file's directory for
 * `enqueue` and the API, the `-o` directory for `sign-release` — and defaults to `<output>/<locale>`; the
 * signed file is `<output dir>/<basename(input)>`. `enqueue --output` and `sign-release -o` replace the
 * top-level `output`. A directory given to `sign-release` instead of a request is read as one: its
 * `release.json` if it has one, else every `*.mar` / `*.zip` below it (`requestFromDirectory`).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { PolicyError, UsageError } from '../errors.js';

/** Limits on a request (hostile or mistaken input). */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
export const MAX_LOCALES = 10_000;
export const MAX_PATH_LENGTH = 4096;
/** BullMQ job ids may not contain ':' and may not be integers; `@` joins release and locale. */
export const RELEASE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/**
 * Locale (container) names: `de`, `en-US`, `ja-JP-mac`, `target`, or `/`-joined such segments (a
 * directory release nested deeper). No `@` (it joins release and locale in job ids), no `..`.
 */
export const LOCALE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(?:\/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,7}$/;
export const PROFILE_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** The request a directory release may hold. */
export const REQUEST_FILE_NAME = 'release.json';
/** Container file names a directory release is scanned for (each is then detected by content). */
export const CONTAINER_EXTENSIONS = ['.mar', '.zip'];

export type ReleaseRequestErrorCode =
  | 'RELEASE_NOT_FOUND'
  | 'RELEASE_EMPTY'
  | 'RELEASE_SCHEMA'
  | 'RELEASE_TOO_LARGE'
  | 'RELEASE_PATH_TRAVERSAL'
  | 'RELEASE_DUPLICATE_OUTPUT'
  | 'OUTPUT_IS_INPUT';

export interface ReleaseRequestLocale {
  locale: string;
  /** As written: relative to the request's input base unless absolute. */
  input: string;
  /** Output directory as written (relative to the output base), when the locale names one. */
  output?: string;
}

/** A parsed request (shape checked, nothing resolved or touched on disk). */
export interface ReleaseRequest {
  release: string;
  profile?: string;
  output?: string;
  locales: ReleaseRequestLocale[];
}

function schemaError(message: string): UsageError {
  return new UsageError('RELEASE_SCHEMA' satisfies ReleaseRequestErrorCode, message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(where: string, obj: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(obj))
    if (!allowed.includes(k))
      throw schemaError(
        `${where} has an unknown field ${JSON.stringify(k)} (allowed: ${allowed.join(', ')})`,
      );
}

function pathField(where: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0)
    throw schemaError(`${where} must be a non-empty string, found ${JSON.stringify(v)}`);
  if (v.length > MAX_PATH_LENGTH)
    throw schemaError(`${where} is longer than ${MAX_PATH_LENGTH} characters (${v.length})`);
  if (v.includes('\0')) throw schemaError(`${where} contains a NUL byte`);
  // Refused outright rather than normalised away: a request that climbs is a mistake or an attack.
  if (v.split(/[\\/]/).includes('..'))
    throw new PolicyError(
      'RELEASE_PATH_TRAVERSAL' satisfies ReleaseRequestErrorCode,
      `${where} contains a '..' segment: ${JSON.stringify(v)}`,
    );
  return v;
}

/** Check a request document's shape (no filesystem access). `where` names it in messages. */
export function parseReleaseRequest(doc: unknown, where = 'the release request'): ReleaseRequest {
  if (!isRecord(doc))
    throw schemaError(
      `${where} must be a JSON object, found ${Array.isArray(doc) ? 'an array' : typeof doc}`,
    );
  checkKeys(where, doc, ['release', 'profile', 'output', 'locales']);
  const { release, profile, locales } = doc;
  if (typeof release !== 'string' || !RELEASE_ID_RE.test(release) || /^\d+$/.test(release))
    throw schemaError(
      `release must match ${RELEASE_ID_RE} and not be all digits, found ${JSON.stringify(release)}`,
    );
  if (profile !== undefined && (typeof profile !== 'string' || !PROFILE_RE.test(profile)))
    throw schemaError(`profile must match ${PROFILE_RE}, found ${JSON.stringify(profile)}`);
  const output = doc.output === undefined ? undefined : pathField('output', doc.output);
  if (!isRecord(locales))
    throw schemaError(
      `locales must be an object of locale → input path or { input, output }, found ${JSON.stringify(locales)}`,
    );
  const names = Object.keys(locales);
  if (names.length === 0) throw schemaError('locales is empty');
  if (names.length > MAX_LOCALES)
    throw schemaError(`locales has ${names.length} entries, more than ${MAX_LOCALES}`);
  return {
    release,
    ...(profile !== undefined ? { profile: profile as string } : {}),
    ...(output !== undefined ? { output } : {}),
    locales: names.map((locale) => {
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
      const out = l.output === undefined ? undefined : pathField(`locales.${locale}.output`, l.output);
      return { locale, input, ...(out !== undefined ? { output: out } : {}) };
    }),
  };
}

/** Read and parse a request file (size-capped; JSON errors give a position, never the text). */
export async function readReleaseRequest(path: string): Promise<ReleaseRequest> {
  const abs = resolve(path);
  let text: string;
  try {
    const st = await stat(abs);
    if (st.size > MAX_REQUEST_BYTES)
      throw new UsageError(
        'RELEASE_TOO_LARGE' satisfies ReleaseRequestErrorCode,
        `${abs} is ${st.size} bytes; a release request is at most ${MAX_REQUEST_BYTES}`,
      );
    text = await readFile(abs, 'utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(
      'RELEASE_NOT_FOUND' satisfies ReleaseRequestErrorCode,
      `release request ${abs} cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    const m = /position (\d+)/.exec(String((e as Error).message));
    throw schemaError(`${abs} is not valid JSON${m ? ` (at character ${m[1]})` : ''}`);
  }
  return parseReleaseRequest(doc, abs);
}

/**
 * A directory as a request: its `release.json` when present, else every `*.mar` / `*.zip` below it
 * (recursively, sorted; `excludeDir` — the output directory — never scanned). A container is named by its
 * directory relative to the root (`de/complete.mar` → `de`), or, at the root or beside other containers,
 * by its path without extension (`target.zip` → `target`, `de/target.zip` → `de/target`); outputs mirror
 * the input layout. The release is named after the directory.
 */
export async function requestFromDirectory(
  root: string,
  excludeDir?: string,
): Promise<{ request: ReleaseRequest; requestFile?: string }> {
  const requestFile = join(root, REQUEST_FILE_NAME);
  if (await isFile(requestFile)) return { request: await readReleaseRequest(requestFile), requestFile };
  const files = await findContainers(root, excludeDir === undefined ? undefined : resolve(excludeDir));
  if (files.length === 0)
    throw new UsageError(
      'RELEASE_EMPTY' satisfies ReleaseRequestErrorCode,
      `no ${CONTAINER_EXTENSIONS.map((e) => `*${e}`).join(' or ')} files under ${root}`,
    );
  const perDir = new Map<string, number>();
  for (const f of files) perDir.set(dirname(f), (perDir.get(dirname(f)) ?? 0) + 1);
  const locales: Record<string, { input: string; output: string }> = {};
  for (const f of files) {
    const rel = relative(root, f).split(sep).join('/');
    const dir = dirname(rel);
    const alone = dir !== '.' && perDir.get(dirname(f)) === 1;
    const locale = alone ? dir : rel.slice(0, rel.length - extname(rel).length);
    if (locales[locale])
      throw schemaError(
        `${root}: two containers are both named ${JSON.stringify(locale)}; use a ${REQUEST_FILE_NAME}`,
      );
    locales[locale] = { input: rel, output: dir };
  }
  // Named after the directory, made a valid release id (and never all digits: BullMQ refuses those).
  let release = basename(resolve(root))
    .replace(/^[^A-Za-z0-9]+/, '')
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .slice(0, 100);
  if (release === '' || /^\d+$/.test(release)) release = `release-${release}`.slice(0, 100);
  return { request: parseReleaseRequest({ release, locales }, root) };
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

async function findContainers(root: string, excludeDir: string | undefined): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const d of names) {
      const p = join(dir, d.name);
      if (d.isDirectory()) {
        if (p !== excludeDir) await walk(p);
      } else if (d.isFile() && CONTAINER_EXTENSIONS.includes(extname(d.name).toLowerCase())) out.push(p);
    }
  };
  await walk(root);
  return out;
}

/** One locale with absolute paths: where its input is and where its signed output goes. */
export interface ResolvedLocale {
  locale: string;
  input: string;
  outputDir: string;
  /** `outputDir/<basename(input)>`; its manifest is `<output>.manifest.json`. */
  output: string;
}

/**
 * Absolute paths for every locale: inputs against `inputBase`; output directories against `outputBase`
 * (a locale's own `output`, else `<output>/<locale>` with `output` = `outputOverride` ?? the request's,
 * default `.`). Two locales may not write the same file, nor a locale over its input.
 */
export function resolveRequest(
  request: ReleaseRequest,
  inputBase: string,
  outputBase: string,
  outputOverride?: string,
): ResolvedLocale[] {
  const top = outputOverride ?? request.output ?? '.';
  const seen = new Map<string, string>();
  return request.locales.map((l) => {
    const input = resolve(inputBase, l.input);
    const outputDir = resolve(outputBase, l.output ?? join(top, l.locale));
    const output = join(outputDir, basename(input));
    if (output === input)
      throw new UsageError(
        'OUTPUT_IS_INPUT' satisfies ReleaseRequestErrorCode,
        `locales.${l.locale}: its output ${output} would overwrite its input`,
      );
    const clash = seen.get(output);
    if (clash)
      throw new UsageError(
        'RELEASE_DUPLICATE_OUTPUT' satisfies ReleaseRequestErrorCode,
        `locales ${clash} and ${l.locale} both write ${output}`,
      );
    seen.set(output, l.locale);
    return { locale: l.locale, input, outputDir, output };
  });
}

/**
 * A request from a path: a request file, or a directory (`requestFromDirectory`). `base` is what its
 * relative inputs are resolved against (the request file's directory, or the directory itself).
 */
export async function loadReleaseRequest(
  path: string,
  options: { excludeDir?: string } = {},
): Promise<{ request: ReleaseRequest; base: string; source: string }> {
  const abs = resolve(path);
  let st;
  try {
    st = await stat(abs);
  } catch (err) {
    throw new UsageError(
      'RELEASE_NOT_FOUND' satisfies ReleaseRequestErrorCode,
      `release ${path} not found (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  if (!st.isDirectory()) return { request: await readReleaseRequest(abs), base: dirname(abs), source: abs };
  const { request, requestFile } = await requestFromDirectory(abs, options.excludeDir);
  return { request, base: abs, source: requestFile ?? abs };
}
