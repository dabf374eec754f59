/**
 * The signing thread pool: a thin wrapper over piscina that resolves the worker file for source (tsx)
 * and compiled (dist/) runs, transfers entry bytes instead of copying them, and turns the worker's
 * plain-data errors back into typed errors.
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { MessagePort } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import { fromPlainError, UsageError } from '../errors.js';
import type { PipelineErrorCode } from './types.js';
import { FROM_SOURCE } from '../version.js';
import { BusyMeter } from './busy.js';
import type { CheckEntryResult, CheckEntryTask, SignEntryResult, SignEntryTask } from './protocol.js';

/**
 * The pool's worker file. Compiled: `dist/workers/sign-entry.js` (this file is `dist/src/pipeline/`).
 * From sources (tsx): `workers/tsx-bootstrap.mjs`, which registers tsx's hooks inside each thread and
 * loads `workers/sign-entry.ts` (see that file for why `execArgv: ['--import', 'tsx']` is not enough).
 */
export const SIGN_ENTRY_WORKER = fileURLToPath(
  new URL(FROM_SOURCE ? '../../workers/tsx-bootstrap.mjs' : '../../workers/sign-entry.js', import.meta.url),
);

export interface PoolOptions {
  /** Worker threads (default: available cores). */
  threads?: number;
  /** Override the worker file (tests). */
  filename?: string;
}

export function validateThreads(threads: unknown): number {
  if (threads === undefined) return Math.max(1, availableParallelism());
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > 256)
    throw new UsageError(
      'BAD_THREADS' satisfies PipelineErrorCode,
      `threads must be an integer from 1 to 256, found ${String(threads)}`,
    );
  return threads;
}

export class SigningPool {
  private piscina: Piscina<SignEntryTask, SignEntryResult> | undefined;
  /** Set by the first task: piscina loading and the pool being constructed. */
  private starting: Promise<Piscina<SignEntryTask, SignEntryResult>> | undefined;
  private readonly filename: string;
  readonly threads: number;
  private completedTasks = 0;
  private completedChecks = 0;
  private closed = false;
  /** Measured busy time; created when the threads start (idle time before that is not the pool's). */
  private busy: BusyMeter | undefined;

  constructor(options: PoolOptions = {}) {
    this.threads = validateThreads(options.threads);
    this.filename = options.filename ?? SIGN_ENTRY_WORKER;
  }

  /**
   * Threads start on the first task, not at construction: a dry run, an all-passthrough locale or a
   * fully warm cache never pays for starting them (and loading keys in each), nor for loading piscina
   * itself (imported here, on first use, to keep it out of the CLI's start-up).
   */
  private start(): Promise<Piscina<SignEntryTask, SignEntryResult>> {
    if (this.closed)
      return Promise.reject(
        new UsageError('POOL_CLOSED' satisfies PipelineErrorCode, 'the signing pool is closed'),
      );
    this.starting ??= import('piscina').then(({ Piscina }) => {
      this.piscina = new Piscina<SignEntryTask, SignEntryResult>({
        filename: this.filename,
        minThreads: this.threads,
        maxThreads: this.threads,
        // Keys load once per thread: keep threads alive for the pool's lifetime.
        idleTimeout: Number.POSITIVE_INFINITY,
        // Inspector flags would make every thread try to bind the parent's port.
        execArgv: process.execArgv.filter((a) => !a.startsWith('--inspect')),
      });
      return this.piscina;
    });
    return this.starting;
  }

  /**
   * Run one sign task. `task.input`'s buffer is transferred (the caller must not use it afterwards);
   * it must own its whole ArrayBuffer (allocUnsafeSlow), or it is copied first.
   */
  async run(task: SignEntryTask, signal?: AbortSignal): Promise<Extract<SignEntryResult, { ok: true }>> {
    const input = ownsBuffer(task.input) ? task.input : copyToOwnBuffer(task.input);
    const pool = await this.start();
    const busy = (this.busy ??= new BusyMeter(this.threads));
    const transferList: (ArrayBuffer | MessagePort)[] = [input.buffer as ArrayBuffer];
    if (task.claims) transferList.push(task.claims);
    busy.begin();
    let result: SignEntryResult;
    try {
      result = await pool.run(
        { ...task, input },
        { transferList: transferList as never, ...(signal ? { signal } : {}) },
      );
    } finally {
      busy.end();
    }
    this.completedTasks++;
    if (!result.ok) throw fromPlainError(result.error);
    return result;
  }

  /**
   * Run one passthrough check (workers/check-entry.ts). `task.input` is only read: a view of shared
   * memory is shared with the thread, anything else is copied by the message (the caller keeps using it).
   */
  async check(task: CheckEntryTask, signal?: AbortSignal): Promise<Extract<CheckEntryResult, { ok: true }>> {
    // A plain view of a bigger buffer would be cloned whole: send only its bytes.
    const shared = task.input.buffer instanceof SharedArrayBuffer;
    if (!shared && !ownsBuffer(task.input)) task = { ...task, input: copyToOwnBuffer(task.input) };
    const pool = await this.start();
    const result = (await pool.run(task as never, {
      name: 'checkEntry',
      ...(signal ? { signal } : {}),
    })) as unknown as CheckEntryResult;
    this.completedChecks++;
    if (!result.ok) throw fromPlainError(result.error);
    return result;
  }

  /** Passthrough checks run so far. */
  get checks(): number {
    return this.completedChecks;
  }

  /** Whether the threads have been started. */
  get started(): boolean {
    return this.piscina !== undefined;
  }
  /**
   * Busy fraction of the threads over the last UTILISATION_WINDOW_MS (busy.ts), measured here: piscina's
   * `utilization` averages over the pool's lifetime, so idle time before a release hides the work.
   */
  get utilisation(): number {
    return this.busy?.utilisation() ?? 0;
  }
  /** Busy thread-seconds since the threads started. */
  get busySeconds(): number {
    return this.busy?.busySeconds() ?? 0;
  }
  get queued(): number {
    return this.piscina?.queueSize ?? 0;
  }
  get completed(): number {
    return this.completedTasks;
  }

  /** The pool once a task has started it (a task accepted before close() still runs). */
  private async startedPool(): Promise<Piscina<SignEntryTask, SignEntryResult> | undefined> {
    return this.starting?.catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    await (await this.startedPool())?.close();
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await (await this.startedPool())?.destroy();
  }
}

/** True when the view spans its entire (non-shared) ArrayBuffer, so transferring it moves only it. */
export function ownsBuffer(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer;
}

export function copyToOwnBuffer(b: Uint8Array): Buffer {
  const out = Buffer.allocUnsafeSlow(b.byteLength);
  out.set(b);
  return out;
}
