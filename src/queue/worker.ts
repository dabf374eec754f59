/**
 * BullMQ consumers for the release flow. The locale handler is plain domain code (sign one locale and
 * summarise its manifest); this module maps its outcome onto BullMQ: progress events, the result, and
 * errors → retry with backoff (transient) or `UnrecoverableError` (format, policy, config: final).
 */
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { TransientError, isRetryable, toPlainError } from '../errors.js';
import { LOCALES_QUEUE, RELEASES_QUEUE, jobStarts } from './bullmq.js';
import { bullConnection, type RedisSettings } from './connection.js';
import type {
  LocaleJobData,
  LocaleJobProgress,
  LocaleJobResult,
  QueueErrorCode,
  ReleaseJobData,
  ReleaseJobResult,
} from './types.js';

export interface LocaleContext {
  /** Report progress (throttled here before it reaches Redis). */
  progress(p: LocaleJobProgress): void;
  /** Aborted when the worker gives up on in-flight jobs at shutdown. */
  signal: AbortSignal;
  /** Which start of the job this is (1 = first), counting re-runs after a worker died. */
  attempt: number;
}

export type LocaleHandler = (data: LocaleJobData, ctx: LocaleContext) => Promise<LocaleJobResult>;

export interface QueueWorkerOptions {
  /** Locale jobs processed at once by this process (they share one signing pool). */
  concurrency: number;
  /** Worker name stored on each job it processes (`processedBy`). */
  name: string;
  /** BullMQ job lock; a SIGKILLed worker's job is re-run after it expires (stalled check). */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  /** How many times a job may stall before it fails; stalls come from crashed workers. */
  maxStalledCount?: number;
  /** Minimum interval between progress writes to Redis. */
  progressIntervalMs?: number;
  onCompleted?: (job: LocaleJobData, result: LocaleJobResult) => void;
  onFailed?: (job: LocaleJobData | undefined, err: Error, final: boolean) => void;
  onError?: (err: Error) => void;
  /** Locale jobs whose lock could not be renewed (they are aborted: the job is no longer this worker's). */
  onLockLost?: (jobIds: string[]) => void;
}

export const WORKER_DEFAULTS = {
  lockDurationMs: 30_000,
  stalledIntervalMs: 30_000,
  maxStalledCount: 2,
  progressIntervalMs: 250,
} as const;

/** `CODE: message`, the failedReason format `status` parses back. */
export function failureMessage(err: unknown): string {
  const p = toPlainError(err);
  return `${p.code}: ${p.message}`;
}

export class QueueWorkers {
  readonly locales: Worker<LocaleJobData, LocaleJobResult>;
  readonly releases: Worker<ReleaseJobData, ReleaseJobResult>;
  private readonly abort = new AbortController();
  /** One controller per locale job in progress, aborted when its lock is lost. */
  private readonly running = new Map<string, AbortController>();

  constructor(settings: RedisSettings, handler: LocaleHandler, options: QueueWorkerOptions) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new RangeError(`options.concurrency must be a positive integer, found ${options.concurrency}`);
    }
    const connection = bullConnection(settings);
    const lockDuration = options.lockDurationMs ?? WORKER_DEFAULTS.lockDurationMs;
    const progressEvery = options.progressIntervalMs ?? WORKER_DEFAULTS.progressIntervalMs;
    const common = {
      connection,
      prefix: settings.prefix,
      name: options.name,
      lockDuration,
      stalledInterval: options.stalledIntervalMs ?? WORKER_DEFAULTS.stalledIntervalMs,
      maxStalledCount: options.maxStalledCount ?? WORKER_DEFAULTS.maxStalledCount,
    };

    this.locales = new Worker<LocaleJobData, LocaleJobResult>(
      LOCALES_QUEUE,
      async (job: Job<LocaleJobData, LocaleJobResult>, _token?: string, signal?: AbortSignal) => {
        let last = 0;
        let latest: LocaleJobProgress = {};
        let writing: Promise<void> = Promise.resolve();
        const write = (p: LocaleJobProgress): Promise<void> => {
          writing = writing.then(() => job.updateProgress(p)).catch(() => undefined);
          return writing;
        };
        const own = new AbortController();
        if (job.id !== undefined) this.running.set(job.id, own);
        const signals = [this.abort.signal, own.signal, ...(signal ? [signal] : [])];
        const ctx: LocaleContext = {
          // BullMQ counted this start already (attemptsStarted); a re-run after a kill is a start too.
          attempt: Math.max(1, jobStarts(job)),
          signal: AbortSignal.any(signals),
          progress: (p) => {
            latest = { ...p, phase: 'signing' };
            const now = Date.now();
            if (now - last >= progressEvery || p.entriesDone === p.entriesTotal) {
              last = now;
              void write(latest);
            }
          },
        };
        try {
          await write({ phase: 'signing' });
          const result = await handler(job.data, ctx);
          await write({ ...latest, phase: 'done' });
          return result;
        } catch (err) {
          const plain = toPlainError(err);
          await write({ ...latest, phase: 'failed', error: plain });
          const message = failureMessage(err);
          if (isRetryable(err)) throw new Error(message, { cause: err });
          throw new UnrecoverableError(message);
        } finally {
          if (job.id !== undefined && this.running.get(job.id) === own) this.running.delete(job.id);
        }
      },
      { ...common, concurrency: options.concurrency },
    );

    // The parent job runs once every locale completed: it sums the children's results.
    this.releases = new Worker<ReleaseJobData, ReleaseJobResult>(
      RELEASES_QUEUE,
      async (job) => {
        const values = (await job.getChildrenValues()) as Record<string, LocaleJobResult>;
        const result: ReleaseJobResult = {
          release: job.data.release,
          locales: {},
          totals: { locales: 0, entries: 0, hits: 0, misses: 0, signOperations: 0, outputBytes: 0 },
        };
        for (const v of Object.values(values)) {
          result.locales[v.locale] = v;
          result.totals.locales++;
          result.totals.entries += v.entries;
          result.totals.hits += v.hits;
          result.totals.misses += v.misses;
          result.totals.signOperations += v.signOperations;
          result.totals.outputBytes += v.outputBytes;
        }
        return result;
      },
      { ...common, concurrency: 4 },
    );

    this.locales.on('completed', (job, result) => options.onCompleted?.(job.data, result));
    this.locales.on('failed', (job, err) => {
      const final =
        err instanceof UnrecoverableError ||
        err.name === 'UnrecoverableError' ||
        (job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1));
      options.onFailed?.(job?.data, err, final);
    });
    for (const w of [this.locales, this.releases]) w.on('error', (err) => options.onError?.(err));
    // A job whose lock could not be renewed is no longer this worker's: its lock expired and the job was
    // handed to another worker, or Redis lost it (a restart without persistence). Finishing it would
    // only race the job that replaces it (same output), and its result could not be recorded.
    this.locales.on('lockRenewalFailed', (ids) => {
      for (const id of ids)
        this.running
          .get(id)
          ?.abort(
            new TransientError(
              'JOB_LOCK_LOST' satisfies QueueErrorCode,
              `lost the lock on locale job ${id} (Redis restarted, or the job stalled and was handed back)`,
            ),
          );
      options.onLockLost?.(ids);
    });
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all([this.locales.waitUntilReady(), this.releases.waitUntilReady()]);
  }

  /**
   * Stop taking jobs and let in-flight ones finish within `timeoutMs`; past it, abort them (they fail
   * as transient and are retried elsewhere) and close forcibly.
   */
  async close(timeoutMs: number): Promise<{ forced: boolean }> {
    const graceful = Promise.all([this.locales.close(), this.releases.close()]).then(() => false);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(true), timeoutMs);
    });
    const forced = await Promise.race([graceful, timeout]);
    clearTimeout(timer);
    if (forced) {
      this.abort.abort(
        new TransientError(
          'WORKER_SHUTDOWN' satisfies QueueErrorCode,
          'the worker shut down before this locale finished; it will be retried',
        ),
      );
      await Promise.race([graceful, new Promise((r) => setTimeout(r, 2_000))]);
      await Promise.all([this.locales.close(true), this.releases.close(true)]);
    }
    return { forced };
  }
}
