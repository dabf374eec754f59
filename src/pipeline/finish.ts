/**
 * Stage 4, finish: seal the container (index / central directory), apply its signature, take the
 * output's digests, and commit it (fsync + rename). An output the memory budget has room for is held in
 * memory once — assembled there (warm) or read back once — so the signature's digest, sha256 and sha512
 * are taken from that buffer on the side threads, the last two while the kernel writes the data (an early
 * fsync through a second descriptor). Otherwise the output streams from the file.
 */
import { open } from 'node:fs/promises';
import type { ArchiveWriter, PredictedLayout } from '../archive/types.js';
import { CodedError } from '../errors.js';
import type { PipelineErrorCode } from './types.js';
import type { Assembly } from './assemble.js';
import { hashFile } from './manifest.js';
import type { SharedLease } from './budget.js';
import type { SigningContext } from './context.js';

/**
 * How many in-memory finishes had the whole output assembled in memory (no read-back of the file at all)
 * vs. read it back (tests).
 */
export const finishStats = { readBack: 0, assembled: 0 };

export interface Finished {
  sha256: string;
  /** Still being taken on a side thread when finish returns (the output tier's store waits for it). */
  sha512: Promise<string>;
  size: number;
  /** The committed output's bytes, when it was held in memory (the output tier stores them). */
  bytes?: Buffer;
  /** The budget lease holding `bytes` (the caller releases it once nothing reads them). */
  lease?: SharedLease;
}

export async function finish(
  writer: ArchiveWriter,
  output: string,
  assembly: Assembly,
  layout: PredictedLayout | undefined,
  assembled: SharedLease | undefined,
  ctx: Pick<SigningContext, 'side' | 'budget'>,
): Promise<Finished> {
  const sealed = await writer.seal();
  const asPredicted = assembly.asPredicted && sealed.fileSize === layout?.fileSize;
  const buffer = assembled?.buffer;
  const useAssembled = asPredicted && buffer !== undefined && buffer.length === sealed.fileSize;
  // Read back into a buffer of the budget's, or stream when it has no room.
  const lease = useAssembled ? assembled : ctx.budget.trySharedBuffer(sealed.fileSize);
  if (!lease) {
    await writer.sign();
    await writer.commit();
    const d = await hashFile(output);
    return { sha256: d.sha256, sha512: Promise.resolve(d.sha512), size: d.size };
  }
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(writer.tempPath, 'r');
  } catch (err) {
    if (lease !== assembled) lease.discard();
    throw err;
  }
  // fsync through a second descriptor flushes the same file; commit's fsync then has little left.
  const early = fh.sync();
  early.catch(() => undefined);
  let buf: Buffer;
  try {
    if (useAssembled) {
      finishStats.assembled++;
      // The header (with its final offsets), index and directory bytes the writer wrote, encoded alike.
      for (const seg of layout!.segments) buffer.set(seg.bytes, seg.offset);
      buf = buffer;
    } else {
      finishStats.readBack++;
      buf = await readAll(fh, writer.tempPath, lease.buffer);
    }
    // The container signature's digest on a side thread (the buffer is shared memory).
    const signed = writer.signedRanges?.();
    const digest = signed
      ? Buffer.from(await ctx.side.digestRanges(buf, signed.algorithm, signed.ranges), 'hex')
      : undefined;
    await writer.sign(buf, digest);
  } catch (err) {
    await early.catch(() => undefined);
    await fh.close();
    // A failed sign may leave the writer's reads of the buffer behind: it is not reused.
    if (lease !== assembled) lease.discard();
    throw err;
  }
  // The final bytes' two digests on the side threads (this thread writes the files of every locale),
  // while the data's fsync started above runs in the kernel; commit's own fsync then has little left.
  // sha256 is queued first (a thread takes requests in order): finish waits for it, not for sha512.
  const sha256 = ctx.side.digest(buf, 'sha256');
  sha256.catch(() => undefined);
  const sha512 = ctx.side.digest(buf, 'sha512');
  sha512.catch(() => undefined);
  await early.catch(() => undefined);
  await fh.close();
  let hex: string;
  try {
    await writer.commit();
    hex = await sha256;
  } catch (err) {
    // A side thread may still be reading the buffer: it goes back to the budget only after.
    await Promise.allSettled([sha256, sha512]);
    if (lease !== assembled) lease.discard();
    throw err;
  }
  return { sha256: hex, sha512, size: buf.length, bytes: buf, lease };
}

async function readAll(fh: Awaited<ReturnType<typeof open>>, path: string, buf: Buffer): Promise<Buffer> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, done);
    if (bytesRead === 0)
      throw new CodedError(
        'OUTPUT_SHORT_READ' satisfies PipelineErrorCode,
        `${path} ended at ${done} of ${buf.length} bytes`,
      );
    done += bytesRead;
  }
  return buf;
}
