import { MAR_MAX_NAME_LENGTH, marError } from './types.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Lenient = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

/**
 * Why a name is unsafe to extract, or undefined if it is fine (mar-format.md §11.6).
 * Names are relative `/`-separated paths. We reject what mardor's safejoin and the updater's
 * get_valid_path refuse, plus what would misbehave on Windows or macOS targets: backslashes,
 * drive letters and `:` (NTFS streams), empty, `.` and `..` segments, control characters.
 */
export function unsafeNameReason(name: string): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name.startsWith('/')) return 'absolute path';
  if (name.includes('\\')) return 'backslash';
  if (name.includes(':')) return 'colon (drive letter or NTFS stream)';
  // C0 controls, DEL, C1 controls.
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return 'control character';
  }
  for (const seg of name.split('/')) {
    if (seg === '') return 'empty path segment';
    if (seg === '.' || seg === '..') return `"${seg}" path segment`;
  }
  return undefined;
}

/** Decode and validate a stored name; throws MAR_BAD_NAME with the offset of the name. */
export function decodeEntryName(bytes: Uint8Array, offset: number, allowUnsafe = false): string {
  if (bytes.length === 0) throw marError('MAR_BAD_NAME', 'empty entry name', offset);
  if (bytes.length > MAR_MAX_NAME_LENGTH)
    throw marError(
      'MAR_BAD_NAME',
      `entry name of ${bytes.length} bytes exceeds ${MAR_MAX_NAME_LENGTH}`,
      offset,
    );
  let name: string;
  try {
    name = utf8.decode(bytes);
  } catch {
    if (!allowUnsafe) throw marError('MAR_BAD_NAME', 'entry name is not valid UTF-8', offset);
    name = utf8Lenient.decode(bytes);
  }
  if (!allowUnsafe) assertSafeName(name, offset);
  return name;
}

export function assertSafeName(name: string, offset?: number): void {
  const why = unsafeNameReason(name);
  if (why) throw marError('MAR_BAD_NAME', `unsafe entry name ${JSON.stringify(name)}: ${why}`, offset);
  if (utf8Encoder.encode(name).length > MAR_MAX_NAME_LENGTH)
    throw marError('MAR_BAD_NAME', `entry name exceeds ${MAR_MAX_NAME_LENGTH} bytes`, offset);
}

/**
 * The codec of a stored entry by its magic, as every MAR reader tells them apart (mar-format.md §9):
 * `BZh` → bz2, `FD 37 7A 58 5A 00` → xz, anything else stored.
 */
export function entryCodecOf(head: Uint8Array): 'none' | 'bz2' | 'xz' {
  if (head.length >= 3 && head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return 'bz2';
  const xz = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
  if (head.length >= 6 && xz.every((b, i) => head[i] === b)) return 'xz';
  return 'none';
}
