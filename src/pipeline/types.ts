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
  /**
   * The locale-output tier: `hit` = the whole output was served from the cache (no entry was signed or
   * assembled); `miss` = looked up, not found, signed as usual (and stored, unless a warning says the
   * store failed). Absent when the tier is off (`--no-output-cache`, `cache.outputs: false`, dry run).
   */
  outputCache?: 'hit' | 'miss';
  entries: EntryRecord[];
  /** Problems that did not fail the locale (e.g. a cache entry that could not be stored). */
  warnings?: string[];
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

/**
 * The worker-thread protocol (workers/sign-entry.ts). Plain, structured-cloneable data only: the task
 * names where the keys are (config path + profile), never carries key material; the entry's bytes are
 * transferred, not copied.
 */
export interface SignEntryTask {
  /** Absolute path of the config file; the worker loads the profile from it once per thread. */
  configPath: string;
  /** sha256 of the config file the main thread loaded: a changed file makes the thread reload. */
  configSha256: string;
  profile: string;
  /** The MAR entry name (for error messages only). */
  name: string;
  /** The entry's raw (compressed) bytes from the input MAR; its ArrayBuffer is in the transferList. */
  input: Uint8Array;
  /** Decompressed-size cap (codec bomb guard). */
  maxOutputSize: number;
}

export interface SignEntryTimings {
  decompressMs: number;
  signMs: number;
  verifyMs: number;
  compressMs: number;
}

export type SignEntryResult =
  | {
      ok: true;
      /** Signed PE, recompressed with the input entry's codec settings (transferred back). */
      output: Uint8Array;
      /** settingsKey() of the input entry, re-checked on the output. */
      codecSettings: string;
      decompressedSize: number;
      signedSize: number;
      /** Hex sha256 of `output`, computed in the worker so the main thread does not hash it again. */
      outputSha256?: string;
      timings: SignEntryTimings;
    }
  | { ok: false; error: PlainError };
