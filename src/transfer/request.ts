/**
 * A release submitted by recipe (`sign-release --remote`, `enqueue --remote`): each locale names the
 * blob holding its input's recipe (src/transfer/recipe.ts) and the file name of its output, instead of
 * paths on a shared filesystem. Validated in full before anything is queued: the schema, the profile,
 * every recipe present and well-formed, and every blob each recipe names held by the server.
 *
 * ```json
 * { "release": "fx-128.0-build2", "profile": "release",
 *   "locales": { "de": { "recipe": "<sha256>", "name": "complete.mar" } } }
 * ```
 */
import type { BlobStore } from '../../cache/types.js';
import { UsageError } from '../errors.js';
import type { ResolvedRelease } from '../queue/types.js';
import { LOCALE_RE, MAX_LOCALES, PROFILE_RE, RELEASE_ID_RE } from '../release/request.js';
import { parseRecipe, recipeBlobs, type Recipe } from './recipe.js';

/** An output file name: one path segment, no `..`, no hidden name. */
export const FILE_NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Missing blobs named in an error (the client asks `/blobs/missing` for the full list). */
const MISSING_NAMED = 10;

export type RecipeRequestErrorCode =
  'RELEASE_SCHEMA' | 'RELEASE_PROFILE_REQUIRED' | 'RELEASE_UNKNOWN_PROFILE' | 'RECIPE_BLOB_MISSING';

export interface RecipeReleaseRequest {
  release: string;
  profile?: string;
  locales: { locale: string; recipe: string; name: string }[];
}

function schemaError(message: string): UsageError {
  return new UsageError('RELEASE_SCHEMA' satisfies RecipeRequestErrorCode, message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Whether a request body is a recipe release (a locale given as `{ recipe, name }`) rather than paths. */
export function isRecipeRequest(body: unknown): boolean {
  if (!isRecord(body) || !isRecord(body.locales)) return false;
  return Object.values(body.locales).some((l) => isRecord(l) && 'recipe' in l);
}

export function parseRecipeRequest(doc: unknown, where = 'the request body'): RecipeReleaseRequest {
  if (!isRecord(doc)) throw schemaError(`${where} must be a JSON object`);
  for (const k of Object.keys(doc))
    if (!['release', 'profile', 'locales'].includes(k))
      throw schemaError(
        `${where} has an unknown field ${JSON.stringify(k)} (a recipe release has release, profile, locales)`,
      );
  const { release, profile, locales } = doc;
  if (typeof release !== 'string' || !RELEASE_ID_RE.test(release) || /^\d+$/.test(release))
    throw schemaError(
      `release must match ${RELEASE_ID_RE} and not be all digits, found ${JSON.stringify(release)}`,
    );
  if (profile !== undefined && (typeof profile !== 'string' || !PROFILE_RE.test(profile)))
    throw schemaError(`profile must match ${PROFILE_RE}, found ${JSON.stringify(profile)}`);
  if (!isRecord(locales)) throw schemaError('locales must be an object of locale → { recipe, name }');
  const names = Object.keys(locales);
  if (names.length === 0) throw schemaError('locales is empty');
  if (names.length > MAX_LOCALES)
    throw schemaError(`locales has ${names.length} entries, more than ${MAX_LOCALES}`);
  return {
    release,
    ...(profile !== undefined ? { profile: profile as string } : {}),
    locales: names.map((locale) => {
      if (!LOCALE_RE.test(locale))
        throw schemaError(`locale ${JSON.stringify(locale)} does not match ${LOCALE_RE}`);
      const l = locales[locale];
      if (!isRecord(l)) throw schemaError(`locales.${locale} must be { recipe, name }`);
      for (const k of Object.keys(l))
        if (k !== 'recipe' && k !== 'name')
          throw schemaError(`locales.${locale} has an unknown field ${JSON.stringify(k)}`);
      if (typeof l.recipe !== 'string' || !SHA256_HEX.test(l.recipe))
        throw schemaError(
          `locales.${locale}.recipe must be a blob digest (64 lowercase hex), found ${JSON.stringify(l.recipe)}`,
        );
      if (typeof l.name !== 'string' || !FILE_NAME_RE.test(l.name))
        throw schemaError(
          `locales.${locale}.name must be a plain file name matching ${FILE_NAME_RE}, found ${JSON.stringify(l.name)}`,
        );
      return { locale, recipe: l.recipe, name: l.name };
    }),
  };
}

/** The profile a request runs with: its own, else the config's only one (as for path releases). */
export function requestProfile(requested: string | undefined, profiles: string[]): string {
  const profile = requested ?? (profiles.length === 1 ? profiles[0] : undefined);
  if (profile === undefined)
    throw new UsageError(
      'RELEASE_PROFILE_REQUIRED' satisfies RecipeRequestErrorCode,
      `the request names no profile and the config has ${profiles.length}`,
    );
  if (!profiles.includes(profile))
    throw new UsageError(
      'RELEASE_UNKNOWN_PROFILE' satisfies RecipeRequestErrorCode,
      `profile ${JSON.stringify(profile)} is not in the config`,
    );
  return profile;
}

/** Read, parse and check a recipe blob from the store; UsageError RECIPE_BLOB_MISSING when it is absent. */
export async function loadRecipe(blobs: BlobStore, sha256: string, where: string): Promise<Recipe> {
  const bytes = await blobs.getBlob(sha256);
  if (!bytes)
    throw new UsageError(
      'RECIPE_BLOB_MISSING' satisfies RecipeRequestErrorCode,
      `${where}: the server holds no recipe blob ${sha256} (upload it first)`,
      { details: { missing: [sha256] } },
    );
  return parseRecipe(bytes, `${where} (blob ${sha256})`);
}

/**
 * Validate a recipe release against the store: every recipe parses and every blob it names is held
 * (the first missing ones are named). The locales' `input` is `recipe:<digest>` and `output`
 * `<locale>/<name>` (names only: the outputs are blobs too).
 */
export async function validateRecipeRelease(
  request: RecipeReleaseRequest,
  opts: { profiles: string[]; blobs: BlobStore },
): Promise<ResolvedRelease> {
  const profile = requestProfile(request.profile, opts.profiles);
  const locales: ResolvedRelease['locales'] = [];
  for (const l of request.locales) {
    const where = `locales.${l.locale}.recipe`;
    const recipe = await loadRecipe(opts.blobs, l.recipe, where);
    const missing: string[] = [];
    for (const b of recipeBlobs(recipe))
      if ((await opts.blobs.blobSize(b.sha256)) !== b.size) missing.push(b.sha256);
    if (missing.length > 0)
      throw new UsageError(
        'RECIPE_BLOB_MISSING' satisfies RecipeRequestErrorCode,
        `${where}: the server does not hold ${missing.length} blob(s) the recipe names: ${missing.slice(0, MISSING_NAMED).join(', ')}${missing.length > MISSING_NAMED ? ', …' : ''}`,
        { details: { locale: l.locale, missing: missing.slice(0, 1000) } },
      );
    locales.push({
      locale: l.locale,
      input: `recipe:${l.recipe}`,
      outputDir: l.locale,
      output: `${l.locale}/${l.name}`,
      recipe: l.recipe,
    });
  }
  return { release: request.release, profile, locales };
}
