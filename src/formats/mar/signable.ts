import type { ByteSource } from '../../io/byte-source.js';
import { MAR_SIGNATURE_BLOCK_OFFSET, marError, type MarInfo } from './types.js';

export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * The byte ranges a MAR signature covers, in order (mar-format.md §8): bytes [0, 20), each signature's
 * 8-byte id/length header (its signature bytes left out), then everything from the end of the last
 * signature to the real EOF (libmar mar_verify.c hashes to EOF, not to the file_size field).
 * Adjacent ranges are merged. Old-style MARs have no signature block and cannot be signed in place.
 */
export function signableRanges(info: MarInfo): ByteRange[] {
  if (info.style !== 'modern')
    throw marError(
      'MAR_NOT_SIGNABLE',
      'an old-style MAR has no signature block; rewrite it as a modern MAR first',
    );
  const ranges: ByteRange[] = [];
  const push = (offset: number, length: number): void => {
    const last = ranges[ranges.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else if (length > 0) ranges.push({ offset, length });
  };
  push(0, MAR_SIGNATURE_BLOCK_OFFSET + 4);
  let end = MAR_SIGNATURE_BLOCK_OFFSET + 4;
  for (const s of info.signatures) {
    push(s.offset - 8, 8);
    end = s.offset + s.length;
  }
  push(end, info.fileSize - end);
  return ranges;
}

/** The signed stream as chunks of at most `chunkSize` bytes, read on demand (a 500 MB MAR is never held in memory). */
export async function* signableChunks(
  source: ByteSource,
  info: MarInfo,
  chunkSize = 1024 * 1024,
): AsyncIterable<Uint8Array> {
  if (!Number.isInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`bad chunkSize ${chunkSize}`);
  for (const r of signableRanges(info)) {
    for (let off = r.offset; off < r.offset + r.length; off += chunkSize) {
      yield await source.read(off, Math.min(chunkSize, r.offset + r.length - off));
    }
  }
}
