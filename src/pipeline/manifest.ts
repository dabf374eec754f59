/** Manifest helpers: hashing outputs and the release-level manifest/sums files. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { LocaleManifest } from './types.js';

export interface FileDigests {
  sha256: string;
  sha512: string;
  size: number;
}

/** sha256 + sha512 of a file in one streaming pass (the output MAR is never held in memory). */
export async function hashFile(path: string): Promise<FileDigests> {
  const h256 = createHash('sha256');
  const h512 = createHash('sha512');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    h256.update(chunk);
    h512.update(chunk);
    size += chunk.length;
  }
  return { sha256: h256.digest('hex'), sha512: h512.digest('hex'), size };
}

export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface ReleaseLocaleResult {
  locale: string;
  input: string;
  output: string;
  /** Path of the locale manifest. */
  manifest?: string;
  ok: boolean;
  error?: import('../errors.js').PlainError;
  outputSha256?: string;
  outputSha512?: string;
  outputSize?: number;
  totals?: LocaleManifest['totals'];
  /** The locale-output tier's answer for this locale (absent when the tier was off). */
  outputCache?: 'hit' | 'miss';
  /** Number of non-fatal warnings in the locale manifest. */
  warnings?: number;
  ms?: number;
}

export interface ReleaseManifest {
  marsignVersion: string;
  release: string;
  profile: string;
  source: string;
  outDir: string;
  dryRun: boolean;
  locales: ReleaseLocaleResult[];
  totals: {
    locales: number;
    failed: number;
    entries: number;
    signed: number;
    hits: number;
    passthrough: number;
    skippedInvalid: number;
    signOperations: number;
    inputBytes: number;
    outputBytes: number;
    /** hits / (hits + misses), 0 when nothing was signable. */
    cacheHitRate: number;
    /** Locales served whole by the locale-output tier. */
    outputHits?: number;
  };
  timings: { startedAt: string; ms: number };
}

/** `SHA512SUMS` in the coreutils format: `<hex>  <path relative to the output dir>`. */
export function sha512Sums(rows: { sha512: string; relPath: string }[]): string {
  return rows.map((r) => `${r.sha512}  ${r.relPath}\n`).join('');
}
