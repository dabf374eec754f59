/**
 * Digests on a second thread while the main thread does other work: node:crypto hashes synchronously on
 * the calling thread, and on 2 cores the main thread (reads, writes, the MAR signature's streamed digest)
 * is the busier one. Here: the output's sha256 and sha512, cache hits' checks, and, while a release is
 * planned, entry keys or the whole input's sha256. The bytes
 * live in a SharedArrayBuffer (no copy to the thread). The thread is started before the bytes exist so its
 * start-up overlaps the read-back and MAR signing; any failure of the thread falls back to hashing inline.
 * The thread runs `workers/side-hash.ts` (protocol: src/pipeline/protocol.ts).
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

/** Counts of digests taken on the side thread vs. inline (tests). */
export const sideHashStats = { threaded: 0, inline: 0 };

export class SideHasher {
  private worker: Worker | undefined;
  private failed = false;
  private started = false;
  private nextId = 1;
  private inFlight = 0;

  /** Starts the thread now; `digest` may be called later. */
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
      this.worker.on('error', () => {
        this.failed = true;
      });
      this.worker.once('online', () => {
        this.started = true;
      });
    } catch {
      this.worker = undefined;
    }
  }

  /** Whether the thread is running (a digest sent now starts at once rather than after its start-up). */
  get online(): boolean {
    return this.started && !this.failed && this.worker !== undefined;
  }

  /** A Buffer over shared memory, so `digest` can hand it to the thread without copying. */
  static alloc(size: number): Buffer {
    return Buffer.from(new SharedArrayBuffer(size));
  }

  /**
   * Hex digest of `bytes` with `algorithm`, taken on the side thread when `bytes` is shared memory
   * (the caller must not modify it until the promise settles), else inline.
   */
  async digest(bytes: Uint8Array, algorithm: string): Promise<string> {
    const worker = this.worker;
    if (!worker || this.failed || !(bytes.buffer instanceof SharedArrayBuffer)) {
      sideHashStats.inline++;
      return createHash(algorithm).update(bytes).digest('hex');
    }
    const id = this.nextId++;
    return new Promise<string>((resolve, reject) => {
      const inline = (): void => {
        cleanup();
        sideHashStats.inline++;
        try {
          resolve(createHash(algorithm).update(bytes).digest('hex'));
        } catch (err) {
          reject(err);
        }
      };
      const onMessage = (m: DigestReply): void => {
        if (m.id !== id) return;
        if (!('hex' in m)) return inline();
        cleanup();
        sideHashStats.threaded++;
        resolve(m.hex);
      };
      const cleanup = (): void => {
        if (--this.inFlight === 0) worker.unref();
        worker.off('message', onMessage);
        worker.off('error', inline);
        worker.off('exit', inline);
      };
      worker.on('message', onMessage);
      worker.once('error', inline);
      worker.once('exit', inline);
      if (this.inFlight++ === 0) worker.ref();
      const request: DigestRequest = {
        id,
        buffer: bytes.buffer as SharedArrayBuffer,
        offset: bytes.byteOffset,
        length: bytes.byteLength,
        algorithm,
      };
      worker.postMessage(request);
    });
  }

  /**
   * Hex sha256 of each view, split between this thread and the side thread (largest first, each to the
   * one with fewer bytes so far), so the two halves run at once. Views on shared memory only go to the
   * side thread; while it is still starting, everything is hashed here.
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
    for (const i of here) out[i] = createHash('sha256').update(views[i]!).digest('hex');
    await Promise.all(side);
    return out;
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate().catch(() => undefined);
  }
}
