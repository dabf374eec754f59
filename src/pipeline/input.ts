/**
 * Reading a locale's input MAR whole into shared memory while hashing it: the whole file's sha256 (the
 * locale-output tier's key) on this thread as the chunks arrive, and each signable entry's sha256 (its
 * entry-cache key) as soon as its bytes are in, on the side threads (and on this thread too when the
 * whole-file hash is not wanted). Reads run a few chunks ahead of the hashing.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { CodedError } from '../errors.js';
import type { PipelineErrorCode } from './types.js';
import type { SideHasher } from './side-hash.js';

/** Read size: small enough that hashing starts early, big enough that syscalls stay few. */
const READ_CHUNK = 2 * 1024 * 1024;
const READ_AHEAD = 3;

export interface InputRange {
  offset: number;
  size: number;
}

/** How `InputSnapshot.entryDigests` names a range: by its place in the bytes, not an index that a
 * re-parse could assign differently. */
export const rangeId = (r: InputRange): string => `${r.offset}:${r.size}`;

export interface InputSnapshot {
  /** The whole file, in shared memory. */
  bytes: Buffer;
  /** Hex sha256 of the whole file (when asked for). */
  sha256?: string;
  /** rangeId → hex sha256 of that range of `bytes` (the ranges asked for). */
  entryDigests: Map<string, string>;
}

/**
 * Read `path` (`into.length` bytes) into `into`. With `whole`, its sha256 is taken on this thread while
 * later chunks are read; every range's sha256 is taken once the range is in, largest first, by a running
 * side thread with nothing of this read queued, else (or, with `whole`, once the whole-file hash is done)
 * here.
 */
export async function readInput(
  path: string,
  into: Buffer,
  opts: { whole: boolean; ranges: InputRange[]; side?: SideHasher },
): Promise<InputSnapshot> {
  const size = into.length;
  const fh = await open(path, 'r');
  const wholeHash = opts.whole ? createHash('sha256') : undefined;
  const entryDigests = new Map<string, string>();
  // Ranges by end offset (they become ready in that order), then the ready ones largest first.
  const byEnd = [...opts.ranges].sort((a, b) => a.offset + a.size - (b.offset + b.size));
  let nextReady = 0;
  const ready: InputRange[] = [];
  const sideJobs: Promise<void>[] = [];
  /** Side digests in flight: at most one per running side thread, so the rest stay for this thread. */
  let sideBusy = 0;
  /** Set once this read is over (done or failed): no new digest of `into` may start after. */
  let stopped = false;
  const side = opts.side;
  const view = (r: InputRange): Buffer => into.subarray(r.offset, r.offset + r.size);
  const toSide = (): void => {
    while (side && !stopped && ready.length > 0 && sideBusy < side.running) {
      const r = ready.shift()!;
      sideBusy++;
      sideJobs.push(
        side.digest(view(r), 'sha256').then((hex) => {
          entryDigests.set(rangeId(r), hex);
          sideBusy--;
          toSide();
        }),
      );
    }
  };
  const hereOne = (): void => {
    const r = ready.shift()!;
    entryDigests.set(rangeId(r), createHash('sha256').update(view(r)).digest('hex'));
  };
  try {
    const st = await fh.stat();
    if (st.size !== size)
      throw new CodedError(
        'INPUT_CHANGED' satisfies PipelineErrorCode,
        `${path} is ${st.size} bytes, expected ${size}`,
      );
    const read = async (pos: number): Promise<number> => {
      const want = Math.min(READ_CHUNK, size - pos);
      let done = 0;
      while (done < want) {
        const { bytesRead } = await fh.read(into, pos + done, want - done, pos + done);
        if (bytesRead === 0)
          throw new CodedError(
            'INPUT_CHANGED' satisfies PipelineErrorCode,
            `${path} shrank while being read`,
          );
        done += bytesRead;
      }
      return pos + want;
    };
    // READ_AHEAD reads in flight: faulting in fresh memory is a good part of a read's cost, and
    // several libuv threads do it at once while this thread hashes.
    const reads: Promise<number>[] = [];
    let issued = 0;
    // With the whole-file hash this thread is the bottleneck: one read ahead keeps up with it, and more
    // would only compete with it for the 2 cores.
    const ahead = opts.whole ? 1 : READ_AHEAD;
    const issue = (): void => {
      while (reads.length < ahead && issued < size) {
        const r = read(issued);
        r.catch(() => undefined);
        reads.push(r);
        issued = Math.min(size, issued + READ_CHUNK);
      }
    };
    issue();
    let pos = 0;
    try {
      while (reads.length > 0) {
        const start = pos;
        pos = await reads.shift()!;
        issue();
        while (nextReady < byEnd.length && byEnd[nextReady]!.offset + byEnd[nextReady]!.size <= pos) {
          ready.push(byEnd[nextReady++]!);
          ready.sort((a, b) => b.size - a.size);
        }
        toSide();
        if (wholeHash) wholeHash.update(into.subarray(start, pos));
        // Without a whole-file hash this thread shares the entries (one per chunk read, so reads go on).
        else if (ready.length > 0) hereOne();
      }
    } finally {
      await Promise.allSettled(reads);
    }
    // Whatever is left: this thread takes the largest ready range while the side threads work through
    // the others; each turn yields so the side threads' answers are seen.
    while (ready.length > 0) {
      toSide();
      if (ready.length === 0) break;
      hereOne();
      await new Promise<void>((r) => setImmediate(r));
    }
    await Promise.all(sideJobs);
    return {
      bytes: into,
      ...(wholeHash ? { sha256: wholeHash.digest('hex') } : {}),
      entryDigests,
    };
  } finally {
    stopped = true;
    await Promise.allSettled(sideJobs);
    await fh.close();
  }
}
