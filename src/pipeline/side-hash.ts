/**
 * One digest of a finished output on a second thread while the main thread takes another: the output
 * sha256 and sha512 of a warm locale's MAR are independent passes over the same bytes, and node:crypto
 * hashes synchronously on the calling thread, so two threads halve that wall time on 2 cores. The bytes
 * live in a SharedArrayBuffer (no copy to the thread). The thread is started before the bytes exist so its
 * start-up overlaps the read-back and MAR signing; any failure of the thread falls back to hashing inline.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

// An eval'd CommonJS body: no worker file to resolve, identical under tsx and the compiled build.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (m) => {
  try {
    const view = new Uint8Array(m.buffer, m.offset, m.length);
    parentPort.postMessage({ id: m.id, hex: createHash(m.algorithm).update(view).digest('hex') });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

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
      this.worker = new Worker(WORKER_SOURCE, { eval: true, stdout: false, stderr: false });
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
      const onMessage = (m: { id?: number; hex?: string; error?: string }): void => {
        if (m.id !== id) return;
        if (typeof m.hex !== 'string') return inline();
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
      worker.postMessage({
        id,
        buffer: bytes.buffer,
        offset: bytes.byteOffset,
        length: bytes.byteLength,
        algorithm,
      });
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
