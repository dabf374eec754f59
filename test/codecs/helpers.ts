/**
 * Test-only helpers for the codec tests: the xz/bzip2 CLIs as independent verifiers, a minimal MAR
 * entry lister for the peer fixtures, and byte patching that keeps xz CRCs valid.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

export function run(cmd: string, args: string[], input?: Uint8Array): Buffer {
  return execFileSync(cmd, args, { input: input ?? Buffer.alloc(0), maxBuffer: 1 << 30 });
}

/** `xz -lvv --robot` of one stream: check name, filter chains of all blocks. */
export function xzList(stream: Uint8Array): { check: string; filters: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'marsign-xzlist-'));
  const file = join(dir, 's.xz');
  let out: string;
  try {
    writeFileSync(file, stream);
    out = execFileSync('xz', ['-lvv', '--robot', file]).toString();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  let check = '';
  const filters: string[] = [];
  for (const line of out.split('\n')) {
    const f = line.split('\t');
    if (f[0] === 'stream') check = f[8]!;
    if (f[0] === 'block') filters.push(f[f.length - 1]!);
  }
  return { check, filters };
}

/** Entries of a MAR file (docs/mar-format.md: index offset at byte 4; entries offset/size/flags/name). */
export function marEntries(path: string): { name: string; bytes: Uint8Array }[] {
  const mar = readFileSync(path);
  const indexOffset = mar.readUInt32BE(4);
  const indexSize = mar.readUInt32BE(indexOffset);
  const out: { name: string; bytes: Uint8Array }[] = [];
  let p = indexOffset + 4;
  while (p < indexOffset + 4 + indexSize) {
    const offset = mar.readUInt32BE(p);
    const size = mar.readUInt32BE(p + 4);
    const nul = mar.indexOf(0, p + 12);
    out.push({
      name: mar.subarray(p + 12, nul).toString(),
      bytes: new Uint8Array(mar.subarray(offset, offset + size)),
    });
    p = nul + 1;
  }
  return out;
}

/** Copy of `bytes` with `edit` applied, then the CRC32 of [crcStart, crcEnd) rewritten at crcEnd. */
export function patchWithCrc(
  bytes: Uint8Array,
  edit: (b: Uint8Array) => void,
  crcStart: number,
  crcEnd: number,
): Uint8Array {
  const b = new Uint8Array(bytes);
  edit(b);
  new DataView(b.buffer).setUint32(crcEnd, crc32(b.subarray(crcStart, crcEnd)) >>> 0, true);
  return b;
}

/** Offset of the first block header's CRC32 (the header size is in its first byte). */
export function firstBlockHeaderCrcAt(xz: Uint8Array): number {
  return 12 + (xz[12]! + 1) * 4 - 4;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}
