/**
 * Writing the certificate table: strip an existing one, append a new one on an 8-byte boundary, point
 * directory entry #4 at it (a file offset, not an RVA) and recompute the checksum on the final bytes.
 * Every function returns a fresh `Uint8Array` (its own ArrayBuffer, transferable to another thread).
 */
import { computeChecksum } from './checksum.js';
import { WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA, type PeInfo } from './types.js';

const align8 = (n: number): number => (n + 7) & ~7;

function writeU32(b: Uint8Array, at: number, v: number): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(at, v >>> 0, true);
}

/** The file without its certificate table and with a zeroed directory entry (unpadded; checksum updated). */
export function stripCertificateTable(bytes: Uint8Array, info: PeInfo): Uint8Array {
  const end = info.certTable ? info.certTable.offset : bytes.length;
  const out = new Uint8Array(end);
  out.set(bytes.subarray(0, end));
  out.fill(0, info.certDirOffset, info.certDirOffset + 8);
  writeU32(out, info.checksumOffset, computeChecksum(out, info.checksumOffset));
  return out;
}

/** Size of the table holding `blobs`, each as a WIN_CERTIFICATE padded to 8 bytes. */
export function certificateTableSize(blobs: readonly Uint8Array[]): number {
  return blobs.reduce((n, b) => n + align8(8 + b.length), 0);
}

/**
 * The image (everything before any existing table) zero-padded to 8, then a new table with one
 * WIN_CERTIFICATE (rev 2.0, PKCS_SIGNED_DATA) per blob. dwLength counts header + data + padding
 * (osslsigncode `pe_append_pkcs7`, jsign `CertificateTableEntry`).
 */
export function writeCertificateTable(
  bytes: Uint8Array,
  info: PeInfo,
  blobs: readonly Uint8Array[],
): Uint8Array {
  const imageEnd = info.certTable ? info.certTable.offset : bytes.length;
  const tableOffset = align8(imageEnd);
  const tableSize = certificateTableSize(blobs);
  const out = new Uint8Array(tableOffset + tableSize);
  out.set(bytes.subarray(0, imageEnd));
  let at = tableOffset;
  for (const b of blobs) {
    const len = align8(8 + b.length);
    writeU32(out, at, len);
    out[at + 4] = WIN_CERT_REVISION_2_0 & 0xff;
    out[at + 5] = WIN_CERT_REVISION_2_0 >> 8;
    out[at + 6] = WIN_CERT_TYPE_PKCS_SIGNED_DATA & 0xff;
    out[at + 7] = WIN_CERT_TYPE_PKCS_SIGNED_DATA >> 8;
    out.set(b, at + 8);
    at += len;
  }
  writeU32(out, info.certDirOffset, blobs.length ? tableOffset : 0);
  writeU32(out, info.certDirOffset + 4, tableSize);
  writeU32(out, info.checksumOffset, computeChecksum(out, info.checksumOffset));
  return out;
}

/** Recompute and store the checksum in place; returns it. */
export function updateChecksum(bytes: Uint8Array, info: Pick<PeInfo, 'checksumOffset'>): number {
  const v = computeChecksum(bytes, info.checksumOffset);
  writeU32(bytes, info.checksumOffset, v);
  return v;
}
