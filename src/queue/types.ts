/**
 * The release queue's data (contract between `enqueue`/`POST /releases`, `marsign worker`, `status`
 * and the dashboard). Job data holds ids, paths and the profile name only: never file bytes, keys,
 * passphrases or tokens.
 */
import type { PlainError } from '../errors.js';
import type { ResolvedLocale } from '../release/request.js';
import type { LocaleProgress } from '../pipeline/types.js';
import type { WorkerHeartbeat } from './heartbeat.js';

/** Codes src/queue connection.ts and worker.ts raise (manifest.ts: QueueRequestErrorCode). */
export type QueueErrorCode =
  | 'CONFIG_REDIS_URL'
  | 'CONFIG_REDIS_PREFIX'
  | 'SECRET_MISSING'
  | 'REDIS_AUTH_FAILED'
  | 'REDIS_UNAVAILABLE'
  | 'JOB_LOCK_LOST'
  | 'WORKER_SHUTDOWN';

/**
 * A release request (src/release/request.ts) validated for the queue: the profile decided, every path
 * absolute, real (symlinks resolved) and inside a configured root.
 */
export interface ResolvedRelease {
  release: string;
  profile: string;
  /** `recipe`: a release submitted by recipe (src/transfer/request.ts): the input recipe's blob digest. */
  locales: (ResolvedLocale & { recipe?: string })[];
}

/**
 * Who submitted a release: an API client's name (`server.clients`), or `cli:<user>` for
 * `marsign enqueue` (Redis access is admin access). Releases queued before clients existed have none.
 */
export type Submitter = string;

/** Data of the parent (release) job. */
export interface ReleaseJobData {
  release: string;
  profile: string;
  locales: string[];
  submittedAt: string;
  client?: Submitter;
}

/** Data of one child (locale) job. */
export interface LocaleJobData {
  release: string;
  locale: string;
  profile: string;
  input: string;
  output: string;
  client?: Submitter;
  /**
   * A recipe locale: the blob digest of its input's recipe. The worker rebuilds the input from blobs in
   * the store and publishes the output as a recipe; `input`/`output` are then names, not paths.
   */
  recipe?: string;
  /** The input's size when submitted (status: the release's remaining bytes for its ETA). */
  inputBytes?: number;
}

/** What a locale job's progress holds: pipeline progress, plus the typed error once it failed. */
export interface LocaleJobProgress extends Partial<LocaleProgress> {
  phase?: 'signing' | 'done' | 'failed';
  error?: PlainError;
}

/** A locale job's return value: the summary of the manifest written beside the output. */
export interface LocaleJobResult {
  locale: string;
  output: string;
  manifest: string;
  outputSha256?: string;
  outputSize?: number;
  entries: number;
  hits: number;
  misses: number;
  passthrough: number;
  skippedInvalid: number;
  signOperations: number;
  inputBytes: number;
  outputBytes: number;
  ms: number;
  worker: string;
  /** A recipe locale's output: the blob digests of its recipe and of its manifest (JSON). */
  outputRecipe?: string;
  manifestBlob?: string;
  outputSha512?: string;
}

/** The parent job's return value, built once every locale completed. */
export interface ReleaseJobResult {
  release: string;
  locales: Record<string, LocaleJobResult>;
  totals: {
    locales: number;
    entries: number;
    hits: number;
    misses: number;
    signOperations: number;
    outputBytes: number;
  };
}

/**
 * `stalled`: active in BullMQ, but the worker running it stopped heart-beating (heartbeat.ts); it stays so
 * until BullMQ's stalled-job check hands it to another worker.
 */
export type LocaleState = 'queued' | 'active' | 'stalled' | 'retrying' | 'completed' | 'failed' | 'unknown';
export type ReleaseState = 'queued' | 'running' | 'completed' | 'failed' | 'unknown';

export interface LocaleStatus {
  locale: string;
  jobId: string;
  state: LocaleState;
  input: string;
  output: string;
  /** Times a worker started this job (BullMQ `attemptsStarted`): a re-run after a kill counts. */
  attempts: number;
  /** Times the job stalled (its worker died or stopped renewing its lock) and was handed back. */
  stalls?: number;
  progress: LocaleJobProgress;
  result?: LocaleJobResult;
  error?: PlainError;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
  worker?: string;
  /** Milliseconds since the worker running it last beat (active and stalled locales). */
  workerSeenMs?: number;
}

export interface ReleaseStatus {
  release: string;
  profile: string;
  /** The submitter (absent for releases queued before clients existed). */
  client?: Submitter;
  state: ReleaseState;
  submittedAt: string;
  finishedAt?: string;
  durationMs?: number;
  /** Whole-release error (the first failed locale's, or the parent job's own). */
  error?: PlainError;
  locales: LocaleStatus[];
  totals: {
    locales: number;
    completed: number;
    failed: number;
    active: number;
    entriesDone: number;
    entriesTotal: number;
    bytesDone: number;
    bytesTotal: number;
    hits: number;
    misses: number;
    /** hits / (hits + misses), or null before any signable entry finished. */
    hitRate: number | null;
  };
  /** Time to completion from the measured byte rates (eta.ts), or null when nothing was measured yet. */
  etaMs: number | null;
}

export interface SubmitResult {
  release: string;
  /** False when a release with this id already existed (re-submission is a no-op). */
  created: boolean;
  locales: string[];
  /** The submitter of the stored release (the caller's own name when created). */
  client?: Submitter;
}

export interface SubmitOptions {
  /** Recorded on the release and each locale job. */
  client: Submitter;
}

export interface ListOptions {
  limit?: number;
  /** Only this submitter's releases (newest first). */
  client?: Submitter;
}

/** The queue as the CLI and the HTTP server see it; BullMQ stays behind it. */
export interface ReleaseQueue {
  submit(release: ResolvedRelease, options: SubmitOptions): Promise<SubmitResult>;
  get(release: string): Promise<ReleaseStatus | undefined>;
  list(options?: ListOptions): Promise<ReleaseStatus[]>;
  /** Every worker heard from lately, with its heartbeat's age (heartbeat.ts). */
  workers(): Promise<WorkerHeartbeat[]>;
  /** Job counts per state, both queues (metrics). */
  counts(): Promise<Record<'releases' | 'locales', Record<string, number>>>;
  close(): Promise<void>;
}
