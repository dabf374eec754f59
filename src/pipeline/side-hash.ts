/**
 * Digests on side threads while the main thread does other work: node:crypto hashes synchronously on the
 * calling thread, which would hold up the main thread's reads and writes. Here: the MAR signature's digest,
 * the output's sha256 and sha512, cache hits' checks, and, while a release is planned, entry keys or the
 * whole input's sha256. The bytes live in a SharedArrayBuffer (no copy to the thread); each digest goes to a
 * running thread (before one still starting) with the fewest bytes queued. The threads are started with the
 * pipeline so their start-up overlaps loading the profile; any failure of a thread falls back to hashing
 * inline. The threads run `workers/side-hash.ts` (protocol: src/pipeline/protocol.ts).
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FROM_SOURCE } from '../version.js';
import type { DigestReply, DigestRequest } from './protocol.js';

/**
 * The thread's module (`workers/side-hash.ts`): compiled, `dist/workers/side-hash.js`; from sources, the
 * tsx bootstrap that registers tsx's hooks in the thread and then loads it (see that file).
 */
const SIDE_HASH_WORKER = fileURLToPath(
  new URL(FROM_SOURCE ? '../../workers/tsx-bootstrap.mjs' : '../../workers/side-hash.js', import.meta.url),
);
const WORKER_DATA = FROM_SOURCE ? { marsignEntry: './side-hash.ts' } : undefined;

/** Counts of digests taken on the side threads (also by algorithm) vs. inline (tests). */
export const sideHashStats = { threaded: 0, inline: 0, threadedBy: {} as Record<string, number> };

/**
 * Side threads a pipeline starts by default. Two: on 2 cores the main thread is not busy all the time,
 * and with one side thread the main thread and it each idled while the other had a queue (measured:
 * docs/BENCHMARKS.md "Scale").
 */
export const DEFAULT_SIDE_THREADS = 2;

/** A byte range of a buffer handed to `digestRanges`. */
export interface HashRange {
  offset: number;
  length: number;
}

/** One side thread: its worker, whether it is up, and the bytes it has been asked to hash and not done. */
class HashThread {
  worker: Worker | undefined;
  failed = false;
  started = false;
  inFlight = 0;
  pendingBytes = 0;

  constructor() {
    try {
      this.worker = new Worker(SIDE_HASH_WORKER, {
        workerData: WORKER_DATA,
        stdout: false,
        stderr: false,
        // Inspector flags would make the thread try to bind the parent's port.
        execArgv: process.execArgv.filter((a) => !a.startsWith('--inspect')),
      });
      this.worker.unref();
      // A thread that failed or ended is not sent anything more (its digests in flight are taken inline).
      this.worker.on('error', () => {
        this.failed = true;
      });
      this.worker.on('exit', () => {
        this.failed = true;
      });
      this.worker.once('online', () => {
        this.started = true;
      });
    } catch {
      this.worker = undefined;
    }
  }

  get usable(): boolean {
    return this.worker !== undefined && !this.failed;
  }
}

export class SideHasher {
  private readonly threads: HashThread[];
  private nextId = 1;
  /** Digests each thread has answered, by thread (tests). */
  readonly answered: number[];

  /** Starts the threads now; `digest` may be called later. */
  constructor(threads: number = DEFAULT_SIDE_THREADS) {
    this.threads = Array.from({ length: Math.max(1, threads) }, () => new HashThread());
    this.answered = this.threads.map(() => 0);
  }

  /** Whether a thread is running (a digest sent now starts at once rather than after its start-up). */
  get online(): boolean {
    return this.threads.some((t) => t.started && t.usable);
  }

  /** Threads running now. */
  get running(): number {
    return this.threads.filter((t) => t.started && t.usable).length;
  }

  /** A Buffer over shared memory, so `digest` can hand it to a thread without copying. */
  static alloc(size: number): Buffer {
    return Buffer.from(new SharedArrayBuffer(size));
  }

  /**
   * Hex digest of `bytes` with `algorithm`, taken on a side thread when `bytes` is shared memory
   * (the caller must not modify it until the promise settles), else inline.
   */
  digest(bytes: Uint8Array, algorithm: string): Promise<string> {
    return this.digestRanges(bytes, algorithm, [{ offset: 0, length: bytes.byteLength }]);
  }

  /**
   * Hex digest of `ranges` of `bytes` (offsets within `bytes`), hashed in order: on a side thread (a
   * running one first, then the fewest bytes still to hash) when `bytes` is shared memory, else inline.
   */
  async digestRanges(bytes: Uint8Array, algorithm: string, ranges: readonly HashRange[]): Promise<string> {
    for (const r of ranges)
      if (r.offset < 0 || r.length < 0 || r.offset + r.length > bytes.byteLength)
        throw new RangeError(`range ${r.offset}+${r.length} is outside the ${bytes.byteLength} bytes given`);
    const hashHere = (): string => {
      const h = createHash(algorithm);
      for (const r of ranges) h.update(bytes.subarray(r.offset, r.offset + r.length));
      return h.digest('hex');
    };
    const usable = this.threads.filter((t) => t.usable);
    if (usable.length === 0 || !(bytes.buffer instanceof SharedArrayBuffer)) {
      sideHashStats.inline++;
      return hashHere();
    }
    // A running thread before one still starting up, then the fewest bytes queued.
    const t = usable.reduce((a, b) =>
      b.started !== a.started ? (b.started ? b : a) : b.pendingBytes < a.pendingBytes ? b : a,
    );
    const index = this.threads.indexOf(t);
    const worker = t.worker!;
    const total = ranges.reduce((n, r) => n + r.length, 0);
    const id = this.nextId++;
    return new Promise<string>((resolve, reject) => {
      const inline = (): void => {
        cleanup();
        sideHashStats.inline++;
        try {
          resolve(hashHere());
        } catch (err) {
          reject(err);
        }
      };
      const onMessage = (m: DigestReply): void => {
        if (m.id !== id) return;
        if (!('hex' in m)) return inline();
        cleanup();
        sideHashStats.threaded++;
        sideHashStats.threadedBy[algorithm] = (sideHashStats.threadedBy[algorithm] ?? 0) + 1;
        this.answered[index]!++;
        resolve(m.hex);
      };
      const cleanup = (): void => {
        t.pendingBytes -= total;
        if (--t.inFlight === 0) worker.unref();
        worker.off('message', onMessage);
        worker.off('error', inline);
        worker.off('exit', inline);
      };
      worker.on('message', onMessage);
      worker.once('error', inline);
      worker.once('exit', inline);
      if (t.inFlight++ === 0) worker.ref();
      t.pendingBytes += total;
      const request: DigestRequest = {
        id,
        buffer: bytes.buffer as SharedArrayBuffer,
        ranges: ranges.map((r) => [bytes.byteOffset + r.offset, r.length]),
        algorithm,
      };
      worker.postMessage(request);
    });
  }

  /**
   * Hex sha256 of each view, split between this thread and the side threads (largest first, each to the
   * one with fewer bytes so far), so the two halves run at once. Views on shared memory only go to the
   * side threads; while they are still starting, everything is hashed here.
   */
  async sha256All(views: Uint8Array[]): Promise<string[]> {
    const out: string[] = new Array<string>(views.length);
    const order = views.map((_, i) => i).sort((a, b) => views[b]!.length - views[a]!.length);
    const side: Promise<void>[] = [];
    const here: number[] = [];
    let sideBytes = 0;
    let hereBytes = 0;
    for (const i of order) {
      const v = views[i]!;
      if (this.online && v.buffer instanceof SharedArrayBuffer && sideBytes <= hereBytes) {
        sideBytes += v.length;
        side.push(this.digest(v, 'sha256').then((h) => void (out[i] = h)));
      } else {
        hereBytes += v.length;
        here.push(i);
      }
    }
    let failed: { reason: unknown } | undefined;
    try {
      for (const i of here) out[i] = createHash('sha256').update(views[i]!).digest('hex');
    } catch (reason) {
      failed = { reason };
    }
    // Settled only once no thread reads the views (the caller may reuse their memory after a failure).
    const settled = await Promise.allSettled(side);
    failed ??= settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.threads.map(async (t) => {
        const w = t.worker;
        t.worker = undefined;
        if (w) await w.terminate().catch(() => undefined);
      }),
    );
  }
}
