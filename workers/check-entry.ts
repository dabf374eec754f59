/**
 * Piscina task (export `checkEntry` of the pool's worker module): one passthrough entry decoded whole
 * with its codec, within the config's bounds, and — for a container that declares them (zip) — its size
 * and CRC-32 compared with what the headers say. Nothing is kept: the decoded bytes only prove the entry
 * can be unpacked. bzip2 and xz check their own stream CRCs while decoding; a stored MAR entry has
 * nothing to check beyond its size bound.
 */
import { performance } from 'node:perf_hooks';
import { crc32 } from 'node:zlib';
import { decompress } from '../src/codecs/index.js';
import { FormatError, toPlainError } from '../src/errors.js';
import type { CheckEntryResult, CheckEntryTask, WorkerErrorCode } from '../src/pipeline/protocol.js';

export async function checkEntry(task: CheckEntryTask): Promise<CheckEntryResult> {
  const t = performance.now();
  try {
    const data = await decompress(task.input, {
      settings: task.codec,
      maxOutputSize: task.maxOutputSize,
      maxRatio: task.maxRatio,
    });
    const { expect } = task;
    if (expect && data.length !== expect.size)
      throw new FormatError(
        'zip',
        'ENTRY_CORRUPT' satisfies WorkerErrorCode,
        `${task.name}: decodes to ${data.length} bytes, its headers declare ${expect.size}`,
        undefined,
        { details: { entry: task.name } },
      );
    if (expect && crc32(data) >>> 0 !== expect.crc32 >>> 0)
      throw new FormatError(
        'zip',
        'ENTRY_CORRUPT' satisfies WorkerErrorCode,
        `${task.name}: decoded CRC-32 ${hex(crc32(data))} does not match ${hex(expect.crc32)} in its headers`,
        undefined,
        { details: { entry: task.name } },
      );
    return { ok: true, decodedSize: data.length, ms: performance.now() - t };
  } catch (err) {
    return { ok: false, error: toPlainError(err) };
  }
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}
