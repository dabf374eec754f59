/**
 * The PE image checksum (imagehlp CheckSumMappedFile): the ones'-complement style sum of the file as
 * little-endian 16-bit words with the CheckSum field taken as zero, folded to 16 bits, plus the file
 * length (osslsigncode pe.c `pe_calc_checksum`, jsign `PEImageChecksum`). An odd last byte is a word
 * on its own and the full length is added: this equals the checksums the GNU linker stored in the
 * corpus's odd-length mingw DLLs, while osslsigncode 2.9 reports 1 less on odd-length files. Signed
 * outputs are 8-byte aligned, where all agree (test/signing/authenticode-corpus.test.ts).
 */
export function computeChecksum(bytes: Uint8Array, checksumOffset: number): number {
  // Summing into a wide accumulator and folding once at the end equals folding after every add
  // (end-around carry is addition modulo 0xFFFF); a double holds the sum exactly below 2^53.
  let sum = 0;
  const n = bytes.length;
  const even = n & ~1;
  for (let i = 0; i < even; i += 2) sum += bytes[i]! | (bytes[i + 1]! << 8);
  if (n & 1) sum += bytes[n - 1]!;
  // Take the 4 CheckSum bytes back out, word by word, so any alignment of the field works.
  for (let i = checksumOffset; i < checksumOffset + 4 && i < n; i++) sum -= bytes[i]! << ((i & 1) * 8);
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return (sum + n) >>> 0;
}
