/**
 * A recipe locale on a worker (docs/ARCHITECTURE.md "Transfer"): rebuild the input from blobs in the
 * store into a private scratch directory, sign it with the pipeline as any input, then publish the
 * output as a recipe — its entries' bytes as blobs (a signed entry shared by many locales is written
 * once; a passthrough entry is the input's blob already), its skeleton, the recipe itself, and the
 * locale manifest — and remove the scratch files. No shared filesystem with the client is needed; the
 * store is the cache directory the workers and the server share.
 */
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { BlobStore } from '../../cache/types.js';
import { FileSource } from '../io/byte-source.js';
import type { LocaleManifest, LocaleProgress } from '../pipeline/types.js';
import { encodeRecipe, rebuild, sha256Hex, splitContainer, type KnownDigests } from './recipe.js';
import { loadRecipe } from './request.js';
import { UsageError } from '../errors.js';
import type { RecipeRequestErrorCode } from './request.js';

export interface RecipeSigner {
  signLocale(options: {
    profile: string;
    input: string;
    output: string;
    onProgress?: (p: LocaleProgress) => void;
    signal?: AbortSignal;
    writeManifest?: boolean;
    /** The audit identity of the locale (its records name them). */
    release?: string;
    locale?: string;
    client?: string;
  }): Promise<LocaleManifest>;
}

export interface RecipeLocaleJob {
  release: string;
  locale: string;
  profile: string;
  /** The input recipe's blob digest. */
  recipe: string;
  /** `<locale>/<file name>`: what the manifest calls the output. */
  output: string;
  /** The submitting API client (audit records). */
  client?: string;
}

export interface RecipeLocaleResult {
  manifest: LocaleManifest;
  outputRecipe: string;
  manifestBlob: string;
  /** Blobs this locale added to the store (entries not held before, skeleton, recipe, manifest). */
  blobsWritten: number;
}

/** Put bytes as a blob (a blob already held is not written again). */
async function put(blobs: BlobStore, bytes: Uint8Array): Promise<{ sha256: string; created: boolean }> {
  const sha256 = sha256Hex(bytes);
  const { created } = await blobs.putBlob(sha256, bytes);
  return { sha256, created };
}

export async function signRecipeLocale(
  blobs: BlobStore,
  signer: RecipeSigner,
  job: RecipeLocaleJob,
  options: { scratch?: string; onProgress?: (p: LocaleProgress) => void; signal?: AbortSignal } = {},
): Promise<RecipeLocaleResult> {
  const where = `locale ${job.locale}`;
  const recipe = await loadRecipe(blobs, job.recipe, where);
  const root = options.scratch ?? tmpdir();
  await mkdir(root, { recursive: true });
  const dir = await mkdtemp(join(root, 'marsign-recipe-'));
  try {
    const name = basename(job.output);
    await mkdir(join(dir, 'in'));
    await mkdir(join(dir, 'out'));
    const input = join(dir, 'in', name);
    const output = join(dir, 'out', name);
    const fh = await open(input, 'wx', 0o600);
    try {
      await rebuild(
        recipe,
        async (sha256) => {
          const b = await blobs.getBlob(sha256);
          if (!b)
            throw new UsageError(
              'RECIPE_BLOB_MISSING' satisfies RecipeRequestErrorCode,
              `${where}: blob ${sha256} of its recipe is no longer in the store (pruned?); submit the release again`,
            );
          return b;
        },
        async (bytes, position) => {
          for (let done = 0; done < bytes.length;) {
            const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
            done += bytesWritten;
          }
        },
        // getBlob hashes what it reads against the blob's name.
        { verified: true },
      );
    } finally {
      await fh.close();
    }
    const signed = await signer.signLocale({
      profile: job.profile,
      input,
      output,
      writeManifest: false,
      release: job.release,
      locale: job.locale,
      ...(job.client !== undefined ? { client: job.client } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let written = 0;
    const src = await FileSource.open(output);
    let outputRecipe: string;
    try {
      // The pipeline hashed what it wrote: its manifest's digests spare reading the output twice more.
      const split = await splitContainer(src, `${where} output`, knownDigests(signed));
      for (const e of split.recipe.entries) {
        if ((await blobs.blobSize(e.sha256)) === e.size) continue;
        const { created } = await blobs.putBlob(e.sha256, await src.read(e.offset, e.size));
        if (created) written++;
      }
      if ((await put(blobs, split.skeleton)).created) written++;
      const r = await put(blobs, encodeRecipe(split.recipe));
      if (r.created) written++;
      outputRecipe = r.sha256;
    } finally {
      await src.close();
    }
    // The manifest as the client will write it: the scratch paths are not the client's business.
    const manifest: LocaleManifest = { ...signed, input: `recipe:${job.recipe}`, output: job.output };
    const m = await put(blobs, Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
    if (m.created) written++;
    return { manifest, outputRecipe, manifestBlob: m.sha256, blobsWritten: written };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A signed locale's digests as its manifest records them (entries by name, only where the size agrees). */
function knownDigests(m: LocaleManifest): KnownDigests | undefined {
  const sha256 = m.outputSha256 ?? m.output_sha256;
  if (!sha256) return undefined;
  const byName = new Map(m.entries.map((e) => [e.name, e]));
  return {
    sha256,
    entry: (name, size) => {
      const e = byName.get(name);
      return e && e.outputSize === size && e.outputSha256 ? e.outputSha256 : undefined;
    },
  };
}
