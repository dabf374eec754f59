/**
 * A log file's lines as raw bytes (what the chain hashes), streamed in chunks: a 100k-record log is
 * never held whole. A line longer than MAX_RECORD_BYTES is returned cut (`tooLong`), so a garbage file
 * cannot make the reader buffer without bound.
 */
import { open } from 'node:fs/promises';
import { MAX_RECORD_BYTES } from './record.js';

const CHUNK = 1024 * 1024;

export interface RawLine {
  /** 1-based line number. */
  n: number;
  bytes: Buffer;
  /** Whether a line break ended it (false only for a last line cut short). */
  terminated: boolean;
  tooLong: boolean;
}

export async function* readLines(path: string): AsyncGenerator<RawLine> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    let pending: Buffer[] = [];
    let pendingLen = 0;
    let tooLong = false;
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        const end = nl < 0 ? chunk.length : nl;
        if (!tooLong) {
          if (pendingLen + end - start > MAX_RECORD_BYTES) {
            tooLong = true;
            const room = MAX_RECORD_BYTES - pendingLen;
            pending.push(Buffer.from(chunk.subarray(start, start + room)));
            pendingLen += room;
          } else {
            pending.push(Buffer.from(chunk.subarray(start, end)));
            pendingLen += end - start;
          }
        }
        if (nl < 0) break;
        yield { n: ++n, bytes: Buffer.concat(pending, pendingLen), terminated: true, tooLong };
        pending = [];
        pendingLen = 0;
        tooLong = false;
        start = nl + 1;
      }
    }
    if (pendingLen > 0 || tooLong)
      yield { n: ++n, bytes: Buffer.concat(pending, pendingLen), terminated: false, tooLong };
  } finally {
    await fh.close();
  }
}
