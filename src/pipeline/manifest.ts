/** Digest helpers: hashing outputs, and the release's `SHA512SUMS`. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export interface FileDigests {
  sha256: string;
  sha512: string;
  size: number;
}

/** sha256 + sha512 of a file in one streaming pass (the output MAR is never held in memory). */
export async function hashFile(path: string): Promise<FileDigests> {
  const h256 = createHash('sha256');
  const h512 = createHash('sha512');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    h256.update(chunk);
    h512.update(chunk);
    size += chunk.length;
  }
  return { sha256: h256.digest('hex'), sha512: h512.digest('hex'), size };
}

export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** `SHA512SUMS` in the coreutils format: `<hex>  <path relative to the output dir>`. */
export function sha512Sums(rows: { sha512: string; relPath: string }[]): string {
  return rows.map((r) => `${r.sha512}  ${r.relPath}\n`).join('');
}
