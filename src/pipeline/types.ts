import type { PlainError } from '../errors.js';

/** What happened to one MAR entry. */
export type EntryAction = 'passthrough' | 'hit' | 'miss' | 'skipped-invalid';

/** Progress of one locale, emitted as entries finish (CLI progress bar, BullMQ job progress). */
export interface LocaleProgress {
  entriesDone: number;
  entriesTotal: number;
  /** Input (compressed) bytes of finished entries / of all entries. */
  bytesDone: number;
  bytesTotal: number;
  hits: number;
  misses: number;
  passthrough: number;
}

export interface EntryRecord {
  name: string;
  action: EntryAction;
  flags: number;
  codec: string;
  inputSize: number;
  outputSize: number;
  inputSha256: string;
  outputSha256: string;
  /** Why an entry was skipped (skipped-invalid), with the typed error. */
  error?: PlainError;
  ms?: number;
}

/** The per-locale manifest (JSON, written beside the output as `<output>.manifest.json`). */
export interface LocaleManifest {
  marsignVersion: string;
  input: string;
  output: string;
  profile: string;
  dryRun: boolean;
  output_sha256?: string;
  output_sha512?: string;
  outputSize?: number;
  entries: EntryRecord[];
  totals: {
    entries: number;
    passthrough: number;
    hits: number;
    misses: number;
    skippedInvalid: number;
    /** Authenticode signing operations done by this run (0 on a fully warm run). */
    signOperations: number;
    inputBytes: number;
    outputBytes: number;
  };
  timings: { startedAt: string; ms: number; planMs?: number; signMs?: number; writeMs?: number };
}

/**
 * Single-flight on a cache key. In-process it is a map of in-flight promises; across processes and
 * hosts the service provides one backed by a Redis lock. `lookup` is tried first, and again after
 * waiting for another holder; `work` runs only when this caller holds the key.
 */
export interface Coordinator {
  once<T>(key: string, lookup: () => Promise<T | undefined>, work: () => Promise<T>): Promise<T>;
}
