/**
 * bzip2 block reuse (src/codecs/bz2-blocks.ts): the bit writer against a bit-by-bit reference, block
 * scanning of `bzip2` CLI streams, block-wise decoding, and re-encoding that copies unchanged blocks —
 * every output checked by the `bzip2` CLI (`-t` and `-dc`), and signed corpus PEs by osslsigncode.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  BitWriter,
  decodeBz2Blocks,
  encodeBz2Reusing,
  foldCrc,
  readBits,
  scanBz2,
} from '../../src/codecs/bz2-blocks.js';
import { decompressEntry, recompressEntry } from '../../src/codecs/index.js';
import { decodeContext, type DecodeContext } from '../../src/codecs/limits.js';
import { loadConfig, loadProfile } from '../../src/config/index.js';
import { FormatError } from '../../src/errors.js';
import { signPe } from '../../src/signing/authenticode.js';
import { peCorpus, tempDir } from '../helpers/env.js';
import { CONFIG_PATH, osslsigncodeVerify } from '../pipeline/_support.js';
import { run } from './helpers.js';

/** A decode bounded by `bytes` only (no ratio cap). */
const cap = (bytes: number): DecodeContext => decodeContext(0, { maxOutputSize: bytes, maxRatio: Infinity });

/** Deterministic, compressible, not run-length-trivial bytes (words from a small vocabulary). */
function textLike(size: number, seed = 1): Buffer {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'mozilla', 'archive', 'sign', 'xul', 'dll', '\n'];
  let x = seed >>> 0 || 1;
  const out = Buffer.alloc(size);
  let o = 0;
  while (o < size) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const w = words[x % words.length]! + (x % 7 === 0 ? String(x % 1000) : ' ');
    o += out.write(w, o);
  }
  return out;
}

const bzip2 = (data: Uint8Array, level = 9): Uint8Array =>
  new Uint8Array(run('bzip2', [`-${level}`, '-c'], data));
const bunzip2 = (data: Uint8Array): Buffer => run('bzip2', ['-dc'], data);

test('BitWriter.copy matches a bit-by-bit reference for every source/destination alignment', () => {
  const src = new Uint8Array(64).map((_, i) => (i * 151 + 17) & 0xff);
  const bitAt = (b: Uint8Array, i: number): number => (b[i >>> 3]! >>> (7 - (i & 7))) & 1;
  for (let lead = 0; lead < 8; lead++) {
    for (let from = 0; from < 16; from++) {
      for (const len of [0, 1, 7, 8, 9, 31, 64, 200, 64 * 8 - from - 1]) {
        const w = new BitWriter(4);
        w.bits(0b1011011, lead > 0 ? lead : 0);
        w.copy(src, from, from + len);
        w.bits(0x5, 3);
        const out = w.finish();
        assert.equal(w.bitLength, lead + len + 3);
        const ref: number[] = [];
        for (let i = 0; i < lead; i++) ref.push((0b1011011 >>> (lead - 1 - i)) & 1);
        for (let i = 0; i < len; i++) ref.push(bitAt(src, from + i));
        ref.push(1, 0, 1);
        for (const [i, b] of ref.entries())
          assert.equal(bitAt(out, i), b, `lead ${lead} from ${from} len ${len} bit ${i}`);
        assert.equal(out.length, Math.ceil(ref.length / 8));
        for (let i = ref.length; i < out.length * 8; i++) assert.equal(bitAt(out, i), 0, 'zero padding');
      }
    }
  }
  assert.equal(readBits(Uint8Array.of(0x12, 0x34, 0x56, 0x78, 0x9a), 4, 32), 0x23456789);
});

test('scanBz2 finds every block of a bzip2 CLI stream; the block CRCs fold to the stream CRC', () => {
  for (const level of [1, 9]) {
    const data = textLike(level * 100_000 * 3 + 12_345, level);
    const stream = bzip2(data, level);
    const l = scanBz2(stream);
    assert.ok(l, `level ${level}: scanned`);
    assert.equal(l.level, level);
    assert.ok(l.blocks.length >= 3, `level ${level}: ${l.blocks.length} blocks`);
    assert.equal(l.blocks[0]!.start, 32);
    for (const [i, b] of l.blocks.entries()) {
      assert.equal(readBits(stream, b.start, 24), 0x314159);
      if (i > 0) assert.equal(b.start, l.blocks[i - 1]!.end);
    }
    assert.equal(l.blocks.at(-1)!.end, l.eos);
    assert.equal(
      l.blocks.reduce((c, b) => foldCrc(c, b.crc), 0),
      l.combinedCrc,
    );
  }
});

test('scanBz2 refuses what it cannot split with certainty: two streams, trailing bytes, no blocks, a bad CRC', () => {
  const one = bzip2(textLike(300_000));
  assert.equal(scanBz2(new Uint8Array(Buffer.concat([one, one]))), undefined, 'two streams');
  assert.equal(scanBz2(new Uint8Array(Buffer.concat([one, Buffer.from('xx')]))), undefined, 'trailing bytes');
  assert.equal(scanBz2(bzip2(new Uint8Array(0))), undefined, 'empty stream (no block)');
  const badCrc = Uint8Array.from(one);
  badCrc[badCrc.length - 2]! ^= 0x10; // inside the stored combined CRC
  assert.equal(scanBz2(badCrc), undefined, 'combined CRC does not fold');
  assert.equal(scanBz2(Uint8Array.from(Buffer.from('BZh0'))), undefined, 'bad header');
});

test('decodeBz2Blocks: same bytes as bzip2 -dc, and each block maps to its output range', async () => {
  const data = textLike(2_000_000, 7);
  const stream = bzip2(data, 5);
  const d = await decodeBz2Blocks(stream, cap(1 << 30));
  assert.ok(d);
  assert.ok(Buffer.from(d.data).equals(data));
  assert.equal(d.ends.length, d.layout.blocks.length);
  assert.equal(d.ends.at(-1), data.length);
  for (let i = 1; i < d.ends.length; i++) assert.ok(d.ends[i]! > d.ends[i - 1]!);
  await assert.rejects(decodeBz2Blocks(stream, cap(1_000_000)), (e: unknown) => {
    assert.ok(e instanceof FormatError);
    assert.equal(e.code, 'CODEC_OUTPUT_TOO_LARGE');
    return true;
  });
});

test('a block that does not decode on its own falls back to the whole-stream decoder and its typed error', async () => {
  const stream = bzip2(textLike(1_500_000, 3));
  const l = scanBz2(stream)!;
  const bad = Uint8Array.from(stream);
  // Flip a byte well inside the second block's Huffman data: the layout still scans, the block fails.
  const mid = ((l.blocks[1]!.start + l.blocks[1]!.end) >>> 4) | 0;
  bad[mid]! ^= 0xff;
  assert.ok(scanBz2(bad), 'layout still scans');
  assert.equal(await decodeBz2Blocks(bad, cap(1 << 30)), undefined);
  await assert.rejects(decompressEntry(bad), (e: unknown) => {
    assert.ok(e instanceof FormatError);
    assert.equal(e.code, 'CODEC_CORRUPT');
    return true;
  });
});

test('a crafted stream of many tiny blocks is left to the whole-stream decoder (bounded set-up cost)', async () => {
  const one = bzip2(Buffer.from('0123456789'));
  const b = scanBz2(one)!.blocks[0]!;
  const n = 5000;
  const w = new BitWriter(one.length * n);
  w.bits(0x425a6839, 32);
  let crc = 0;
  for (let i = 0; i < n; i++) {
    w.copy(one, b.start, b.end);
    crc = foldCrc(crc, b.crc);
  }
  w.bits(0x177245, 24);
  w.bits(0x385090, 24);
  w.bits(crc, 32);
  const stream = w.finish();
  assert.equal(scanBz2(stream)?.blocks.length, n, 'a valid stream of 5000 blocks');
  assert.equal(await decodeBz2Blocks(stream, cap(1 << 30)), undefined);
  const decoded = await decompressEntry(stream);
  assert.equal(decoded.bz2Blocks, undefined);
  assert.equal(Buffer.from(decoded.data).toString(), '0123456789'.repeat(n));
  assert.ok(bunzip2(stream).equals(Buffer.from(decoded.data)), 'bzip2 -dc agrees');
});

test('encodeBz2Reusing: edits at the start, middle and end, appends and truncation all decode with bzip2 -dc', async () => {
  const original = textLike(3_100_000, 11);
  const stream = bzip2(original, 9);
  const d = (await decodeBz2Blocks(stream, cap(1 << 30)))!;
  const blocks = d.layout.blocks.length;
  const cases: [string, (b: Buffer) => Buffer, (reused: number) => boolean][] = [
    ['unchanged', (b) => Buffer.from(b), (r) => r === blocks],
    [
      'header edit + append (Authenticode shape)',
      (b) => {
        const c = Buffer.concat([b, Buffer.alloc(9000, 0xa5)]);
        c.writeUInt32LE(0xdeadbeef, 0x98);
        return c;
      },
      (r) => r === blocks - 1,
    ],
    [
      'middle edit',
      (b) => {
        const c = Buffer.from(b);
        c[1_500_000]! ^= 1;
        return c;
      },
      (r) => r === blocks - 1,
    ],
    ['truncated tail', (b) => Buffer.from(b.subarray(0, b.length - 50_000)), (r) => r === blocks - 1],
    ['append only', (b) => Buffer.concat([b, Buffer.from('signature')]), (r) => r === blocks],
    ['first byte', (b) => Buffer.concat([Buffer.from('X'), b]), (r) => r === 0],
  ];
  for (const [label, edit, reusedOk] of cases) {
    const signed = edit(original);
    const r = await encodeBz2Reusing(signed, d);
    assert.ok(r, label);
    assert.ok(reusedOk(r.stats.reusedBlocks), `${label}: reused ${r.stats.reusedBlocks} of ${blocks}`);
    assert.equal(
      r.stats.reusedBytes + r.stats.encodedBytes,
      signed.length,
      `${label}: every byte accounted for`,
    );
    assert.equal(Buffer.from(r.output.subarray(0, 4)).toString(), 'BZh9', label);
    run('bzip2', ['-t'], r.output);
    assert.ok(bunzip2(r.output).equals(signed), `${label}: bzip2 -dc gives the edited bytes`);
    const again = await decodeBz2Blocks(r.output, cap(1 << 30));
    assert.ok(again && Buffer.from(again.data).equals(signed), `${label}: our block decoder agrees`);
  }
});

test('signed corpus PEs: block reuse re-encodes a fraction of the bytes; bzip2 -dc + osslsigncode verify', async (t) => {
  const corpus = peCorpus();
  if (typeof corpus === 'string') return t.skip(corpus);
  const big = corpus.filter((f) => statSync(f).size > 2_500_000).slice(0, 3);
  assert.ok(big.length > 0, 'corpus has PEs over 2.5 MB');
  const profile = await loadProfile(await loadConfig(CONFIG_PATH), 'dev');
  const dir = tempDir();
  for (const [i, file] of big.entries()) {
    const pe = await readFile(file);
    const level = i % 2 === 0 ? 9 : 1;
    const decoded = await decompressEntry(bzip2(pe, level));
    assert.ok(decoded.bz2Blocks, `${file}: decoded block by block`);
    assert.ok(Buffer.from(decoded.data).equals(pe));
    const signed = await signPe(decoded.data, profile.authenticode!);
    const { output, reuse } = await recompressEntry(signed, decoded);
    assert.ok(reuse, `${file}: blocks were reused`);
    assert.ok(reuse.reusedBlocks >= 2, `${file}: ${reuse.reusedBlocks} blocks reused`);
    assert.ok(
      reuse.encodedBytes < signed.length / 2,
      `${file}: re-encoded ${reuse.encodedBytes} of ${signed.length}`,
    );
    assert.equal(output[3], 0x30 + level, 'block size level kept');
    const back = bunzip2(output);
    assert.ok(back.equals(signed), `${file}: bzip2 -dc gives the signed PE`);
    osslsigncodeVerify(back, dir, `corpus-${i}.exe`);
  }
});

test('MARSIGN_BZ2_BLOCK_REUSE=0 turns reuse off: the whole signed file is encoded (byte-identical to bzip2 -N)', async () => {
  const original = textLike(1_200_000, 5);
  const prev = process.env.MARSIGN_BZ2_BLOCK_REUSE;
  process.env.MARSIGN_BZ2_BLOCK_REUSE = '0';
  try {
    const decoded = await decompressEntry(bzip2(original));
    assert.equal(decoded.bz2Blocks, undefined);
    const edited = Buffer.concat([original, Buffer.from('tail')]);
    const { output, reuse } = await recompressEntry(edited, decoded);
    assert.equal(reuse, undefined);
    assert.ok(Buffer.from(output).equals(bzip2(edited)));
  } finally {
    if (prev === undefined) delete process.env.MARSIGN_BZ2_BLOCK_REUSE;
    else process.env.MARSIGN_BZ2_BLOCK_REUSE = prev;
  }
});

test('property: any set of splices (replace, insert, delete) re-encodes to exactly the edited bytes', async () => {
  const level = 2; // 200 kB blocks: many blocks, quick encodes
  const original = textLike(1_300_000, 23);
  const d = (await decodeBz2Blocks(bzip2(original, level), cap(1 << 30)))!;
  assert.ok(d.layout.blocks.length >= 6);
  const edit = fc.record({
    at: fc.nat({ max: original.length }),
    remove: fc.nat({ max: 3000 }),
    insert: fc.uint8Array({ maxLength: 3000 }),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(edit, { minLength: 0, maxLength: 4 }), async (edits) => {
      let b = Buffer.from(original);
      for (const e of edits) {
        const at = Math.min(e.at, b.length);
        b = Buffer.concat([b.subarray(0, at), e.insert, b.subarray(Math.min(b.length, at + e.remove))]);
      }
      const r = await encodeBz2Reusing(b, d);
      assert.ok(r);
      assert.equal(r.stats.reusedBytes + r.stats.encodedBytes, b.length);
      assert.ok(bunzip2(r.output).equals(b));
    }),
    { numRuns: 12, seed: 0x627a32 },
  );
});
