/**
 * Test-only helpers for the codec tests: the xz/bzip2 CLIs as independent verifiers, a minimal MAR
 * entry lister for the peer fixtures, byte patching that keeps xz CRCs valid, and codec bombs made at
 * test time (small on disk).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { BitWriter, foldCrc, scanBz2, type Bz2Block } from '../../src/codecs/bz2-blocks.js';

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

/**
 * Zero bytes that make exactly one bzip2 -9 block: bzip2's first run-length stage stores a run of 255
 * zeros in 5 bytes, and a -9 block holds 899,981 such bytes, so ~45.9 MB of zeros fit; 45 MB leaves room.
 */
const ZEROS_PER_BLOCK = 45_000_000;
const zeroBlockStream = new Map<number, Uint8Array>();

/** One-block (or empty) `bzip2 -9` stream of `n` ≤ ZEROS_PER_BLOCK zeros, made once per size. */
function zeroStream(n: number): Uint8Array {
  let s = zeroBlockStream.get(n);
  if (!s) {
    s = new Uint8Array(run('bzip2', ['-9', '-c'], new Uint8Array(n)));
    zeroBlockStream.set(n, s);
  }
  return s;
}

/**
 * A valid single bzip2 -9 stream: the blocks of `head` (a `bzip2 -9` stream, e.g. of a PE) followed by
 * `zeros` zero bytes, built by splicing copies of one block of 45 MB of zeros (bz2-blocks.ts), so a
 * GiB-sized bomb costs one small `bzip2` run and ~35 bytes per 45 MB. `bzip2 -t` accepts it.
 */
export function bz2WithZeros(zeros: number, head?: Uint8Array): Uint8Array {
  const pieces: { src: Uint8Array; block: Bz2Block }[] = [];
  const add = (stream: Uint8Array): void => {
    const l = scanBz2(stream);
    if (!l) throw new Error('bz2WithZeros: cannot split a bzip2 -9 stream');
    for (const block of l.blocks) pieces.push({ src: stream, block });
  };
  if (head) add(head);
  for (let left = zeros; left > 0; left -= ZEROS_PER_BLOCK) add(zeroStream(Math.min(left, ZEROS_PER_BLOCK)));
  const w = new BitWriter(64 + pieces.reduce((n, p) => n + ((p.block.end - p.block.start) >>> 3) + 1, 0));
  w.bits(0x425a6839, 32); // 'BZh9'
  let combined = 0;
  for (const p of pieces) {
    w.copy(p.src, p.block.start, p.block.end);
    combined = foldCrc(combined, p.block.crc);
  }
  w.bits(0x177245, 24); // end-of-stream magic 0x177245385090, then the combined CRC
  w.bits(0x385090, 24);
  w.bits(combined, 32);
  return w.finish();
}

/** An `xz --check=crc64` stream of `n` zero bytes (xz -0: fast, and the index declares `n`). */
export function xzZeros(n: number, head?: Uint8Array): Uint8Array {
  const data = new Uint8Array((head?.length ?? 0) + n);
  if (head) data.set(head);
  return new Uint8Array(run('xz', ['-0', '-c', '--check=crc64'], data));
}
