import type { ContainerName } from '../archive/types.js';
import type { PlainError } from '../errors.js';

/** Codes src/pipeline raises itself (budget.ts: BudgetErrorCode; workers: WorkerErrorCode, protocol.ts). */
export type PipelineErrorCode =
  | 'ABORTED'
  | 'BAD_THREADS'
  | 'BAD_CONCURRENCY'
  | 'POOL_CLOSED'
  | 'PIPELINE_CLOSED'
  | 'CONFIG_MISSING'
  | 'CONFIG_INVALID'
  | 'CONFIG_BAD_POLICY'
  | 'INPUT_CHANGED'
  | 'OUTPUT_IS_INPUT'
  | 'OUTPUT_SHORT_READ';

/**
 * What happened to one entry in this run:
 * - `signed`: this locale's work made a new Authenticode signature for it;
 * - `shared`: its signed bytes (or its PE's signature) were made in this run for another locale or entry;
 * - `cached`: served from the cache, filled by an earlier run (or by another process);
 * - `passthrough`: not matched by the policy, copied as stored;
 * - `skipped-invalid`: matched but not a PE / not decodable, copied as stored (`onInvalid: skip`).
 */
export type EntryAction = 'passthrough' | 'signed' | 'shared' | 'cached' | 'skipped-invalid';

/**
 * How a passthrough entry was found intact before the container was signed:
 * - `decoded`: decoded whole in this run (and its CRC-32 compared, zip); a stored MAR entry: within bounds;
 * - `cached`: a check of the same stored bytes, codec and bounds passed before (a marker in the cache,
 *   or another entry of this process);
 * - `unchecked`: not checked (`--no-verify-passthrough`, `policy.verifyPassthrough: false`, a dry run).
 */
export type PassthroughCheck = 'decoded' | 'cached' | 'unchecked';

/** Where a locale is: reading and planning its entries, signing them, finishing the output, done. */
export type LocaleStage = 'planning' | 'signing' | 'writing' | 'done';

/**
 * Progress of one locale, emitted as its stage changes, as entries finish and (throttled by the pool
 * threads, protocol.ts TaskProgress) while entries are being signed (CLI progress, BullMQ job progress).
 */
export interface LocaleProgress {
  stage: LocaleStage;
  entriesDone: number;
  entriesTotal: number;
  /** Input (compressed) bytes of finished entries / of all entries. */
  bytesDone: number;
  bytesTotal: number;
  /**
   * Stored bytes of this locale's entries still being signed, weighted by how far their pool tasks are
   * (decoded and re-encoded bytes measured by the codecs, work.ts): `bytesDone + workBytesDone` moves
   * smoothly within one big entry. Not yet in `bytesDone`; it may drop back when a task ends before the
   * locale has assembled its entry (a display keeps the maximum).
   */
  workBytesDone: number;
  hits: number;
  misses: number;
  passthrough: number;
}

export interface EntryRecord {
  name: string;
  action: EntryAction;
  /** MAR: the entry's permission flags. */
  flags?: number;
  /** The entry's codec settings (`bz2:9`, `xz:dict=…`, `deflate`, `none`), `unknown` when unreadable. */
  codec: string;
  inputSize: number;
  outputSize: number;
  inputSha256: string;
  outputSha256: string;
  /** A passthrough entry: whether (and how) it was checked before the container was signed. */
  check?: PassthroughCheck;
  /** Why an entry was skipped (skipped-invalid), with the typed error. */
  error?: PlainError;
  /**
   * The timestamp authority (configured URL) of the entry's signature, when this run knows it: made
   * here, or made in this run for another entry. Absent for one from the cache (its audit record of the
   * run that made it names it) or when the profile does not timestamp.
   */
  tsa?: string;
  ms?: number;
}

/** The per-locale manifest (JSON, written beside the output as `<output>.manifest.json`). */
export interface LocaleManifest {
  marsignVersion: string;
  input: string;
  output: string;
  /** The input's container format, detected by content. */
  container: ContainerName;
  profile: string;
  dryRun: boolean;
  outputSha256?: string;
  outputSha512?: string;
  outputSize?: number;
  /** @deprecated the old snake_case names of outputSha256/outputSha512, still written for scripts. */
  output_sha256?: string;
  /** @deprecated see output_sha256. */
  output_sha512?: string;
  /**
   * The locale-output tier: `hit` = the whole output was served from the cache (no entry was signed or
   * assembled); `miss` = looked up, not found, signed as usual (and stored, unless a warning says the
   * store failed). Absent when the tier is off (`--no-output-cache`, `cache.outputs: false`, dry run).
   */
  outputCache?: 'hit' | 'miss';
  /**
   * Whether every passthrough entry was found intact before the output was signed (each entry's `check`
   * says how); false when the check was turned off (`--no-verify-passthrough`) or in a dry run.
   */
  passthroughVerified: boolean;
  entries: EntryRecord[];
  /** Problems that did not fail the locale (e.g. a cache entry that could not be stored). */
  warnings?: string[];
  totals: LocaleTotals;
  timings: { startedAt: string; ms: number; planMs?: number; signMs?: number; writeMs?: number };
}

export interface LocaleTotals {
  entries: number;
  passthrough: number;
  /** Entries by action (see EntryAction). */
  signed: number;
  shared: number;
  cached: number;
  skippedInvalid: number;
  /** Passthrough entries decoded (checked) by this run; those found checked already are not counted. */
  passthroughDecoded: number;
  /** Authenticode signatures made by this locale's work (= `signed`; 0 on a warm run). */
  signOperations: number;
  /** Older names kept for scripts: `hits` = shared + cached, `misses` = signed. */
  hits: number;
  misses: number;
  inputBytes: number;
  outputBytes: number;
}

/**
 * Single-flight on a cache key. In-process it is a map of in-flight promises; across processes and
 * hosts the service provides one backed by a Redis lock. `lookup` is tried first, and again after
 * waiting for another holder; `work` runs only when this caller holds the key.
 */
export interface Coordinator {
  once<T>(key: string, lookup: () => Promise<T | undefined>, work: () => Promise<T>): Promise<T>;
  /**
   * Whether a slot is held in this process only, so a slot whose work waits for its turn costs nothing
   * (the release scheduler gates work behind such slots; a distributed lock would be held while waiting).
   */
  readonly local: boolean;
}
