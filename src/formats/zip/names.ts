import { unsafeNameReason as unsafeMarNameReason } from '../mar/names.js';
import { ZIP_FLAG_UTF8, ZIP_MAX_NAME_LENGTH, zipError } from './types.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Lenient = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

/** IBM code page 437, bytes 0x80-0xFF: the name encoding when flag bit 11 is clear (APPNOTE appendix D). */
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

/** Bytes 0x00-0x7F as ASCII (controls stay controls, so the safety check sees them), the rest by CP437. */
export function decodeCp437(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b < 0x80 ? String.fromCharCode(b) : CP437_HIGH[b - 0x80]!;
  return s;
}

/**
 * Why a zip name is unsafe to extract, or undefined. A directory entry's one trailing `/` is allowed;
 * the rest is the MAR rule (src/formats/mar/names.ts): relative, `/`-separated, no backslash, `:`
 * (drive letters, NTFS streams), control characters, or empty, `.` and `..` segments. This is what yauzl's
 * validateFileName refuses (absolute, `C:/`, `..`, `\` with strictFileNames) and more.
 */
export function unsafeZipNameReason(name: string): string | undefined {
  if (name === '/') return 'absolute path';
  return unsafeMarNameReason(name.endsWith('/') ? name.slice(0, -1) : name);
}

export function assertSafeZipName(name: string, offset?: number): void {
  const why = unsafeZipNameReason(name);
  if (why) throw zipError('ZIP_BAD_NAME', `unsafe entry name ${JSON.stringify(name)}: ${why}`, offset);
  if (utf8Encoder.encode(name).length > ZIP_MAX_NAME_LENGTH)
    throw zipError('ZIP_BAD_NAME', `entry name exceeds ${ZIP_MAX_NAME_LENGTH} bytes`, offset);
}

/** Decode stored name bytes by flag bit 11 (§4.4.4, appendix D); throws ZIP_BAD_NAME on invalid UTF-8. */
export function decodeZipName(bytes: Uint8Array, flags: number, offset: number, allowUnsafe = false): string {
  if (bytes.length === 0) throw zipError('ZIP_BAD_NAME', 'empty entry name', offset);
  if (bytes.length > ZIP_MAX_NAME_LENGTH)
    throw zipError(
      'ZIP_BAD_NAME',
      `entry name of ${bytes.length} bytes exceeds ${ZIP_MAX_NAME_LENGTH}`,
      offset,
    );
  if (flags & ZIP_FLAG_UTF8) {
    try {
      return utf8.decode(bytes);
    } catch {
      if (!allowUnsafe)
        throw zipError('ZIP_BAD_NAME', 'entry name is not valid UTF-8 (flag bit 11 set)', offset);
      return utf8Lenient.decode(bytes);
    }
  }
  return decodeCp437(bytes);
}

/** Encode a name for a new entry: UTF-8 bytes, and whether flag bit 11 is needed (any non-ASCII). */
export function encodeZipName(name: string): { bytes: Uint8Array; utf8: boolean } {
  const bytes = utf8Encoder.encode(name);
  return { bytes, utf8: bytes.some((b) => b >= 0x80) };
}
