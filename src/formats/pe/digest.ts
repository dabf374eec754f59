/**
 * The Authenticode image digest, linear form (osslsigncode pe.c `pe_digest_calc_bio`, jsign
 * `PEFile.computeDigest`): the whole file up to the certificate table, skipping the CheckSum field and
 * the certificate-table directory entry; an unsigned file whose length is not a multiple of 8 is hashed
 * as if zero-padded to 8, because the signer writes that padding before the table
 * (../shared/docs/authenticode.md §2).
 */
import { createHash } from 'node:crypto';
import type { PeHash, PeInfo } from './types.js';

/** The [start, end) file ranges that are hashed, and how many zero bytes follow them. */
export function authenticodeRanges(info: PeInfo): { ranges: Array<[number, number]>; padding: number } {
  const end = info.certTable ? info.certTable.offset : info.fileSize;
  const ranges: Array<[number, number]> = [
    [0, info.checksumOffset],
    [info.checksumOffset + 4, info.certDirOffset],
    [info.certDirOffset + 8, Math.max(end, info.certDirOffset + 8)],
  ];
  const padding = info.certTable ? 0 : (8 - (end % 8)) % 8;
  return { ranges, padding };
}

export function authenticodeDigest(bytes: Uint8Array, info: PeInfo, hash: PeHash = 'sha256'): Buffer {
  const h = createHash(hash);
  const { ranges, padding } = authenticodeRanges(info);
  for (const [s, e] of ranges) h.update(bytes.subarray(s, e));
  if (padding) h.update(new Uint8Array(padding));
  return h.digest();
}
