import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decompress } from '../../src/codecs/index.js';
import { FormatError } from '../../src/errors.js';
import { Cursor } from '../../src/formats/cursor.js';
import {
  inspectXz,
  lzma2DictProp,
  lzma2DictSize,
  parseBlockHeader,
  readVli,
  readXzSettings,
} from '../../src/codecs/xz-header.js';
import { run } from './helpers.js';

const MiB = 1024 * 1024;
const code = (c: string) => (e: unknown) => e instanceof FormatError && e.code === c && e.format === 'xz';

test('LZMA2 dictionary byte (spec §5.3.1): 2^n and 2^n+2^(n-1), 40 = 4 GiB-1, >40 invalid', () => {
  assert.equal(lzma2DictSize(0), 4096);
  assert.equal(lzma2DictSize(1), 6144);
  assert.equal(lzma2DictSize(22), 8 * MiB);
  assert.equal(lzma2DictSize(23), 12 * MiB);
  assert.equal(lzma2DictSize(24), 16 * MiB);
  assert.equal(lzma2DictSize(28), 64 * MiB);
  assert.equal(lzma2DictSize(40), 0xffffffff);
  assert.throws(() => lzma2DictSize(41), code('CODEC_CORRUPT'));
  assert.throws(() => lzma2DictSize(0x40), code('CODEC_CORRUPT'));
  assert.equal(lzma2DictProp(8 * MiB), 22);
  assert.equal(lzma2DictProp(10 * MiB), undefined);
});

test('multibyte integers: little-endian 7-bit groups, minimal, at most 9 bytes', () => {
  const vli = (...b: number[]) => readVli(new Cursor(Uint8Array.from(b), 'xz', 0, 'CODEC_CORRUPT'));
  assert.equal(vli(0x00), 0);
  assert.equal(vli(0x7f), 127);
  assert.equal(vli(0x80, 0x01), 128);
  assert.equal(vli(0x80, 0x80, 0x80, 0x02), 4 * MiB);
  assert.throws(() => vli(0x80, 0x00), code('CODEC_CORRUPT'));
  assert.throws(() => vli(0x80), code('CODEC_CORRUPT'));
  assert.throws(() => vli(...Array(9).fill(0xff), 0x01), code('CODEC_CORRUPT'));
});

test('block header of `xz --x86 --lzma2`: x86 then LZMA2 8 MiB; CRC and padding checked', () => {
  const xz = run('xz', ['--x86', '--lzma2', '-c'], Buffer.from('hello'.repeat(99)));
  const h = parseBlockHeader(xz, 12);
  assert.equal(h.x86, true);
  assert.equal(h.dictSize, 8 * MiB);
  assert.equal(h.headerSize, (xz[12]! + 1) * 4);
  const bad = new Uint8Array(xz);
  bad[12 + h.headerSize - 1]! ^= 0xff;
  assert.throws(() => parseBlockHeader(bad, 12), code('CODEC_CORRUPT'));
  assert.deepEqual(readXzSettings(xz), { dictSize: 8 * MiB, x86: true, check: 'crc64' });
});

test('inspectXz: index totals, block offsets; truncation anywhere is a typed error', () => {
  const data = Buffer.from('abc'.repeat(10_000));
  const xz = run('xz', ['--lzma2=preset=6,dict=1MiB', '--check=crc32', '-c'], data);
  const info = inspectXz(xz);
  assert.equal(info.uncompressedSize, data.length);
  assert.equal(info.blocks.length, 1);
  assert.equal(info.blocks[0]!.offset, 12);
  assert.equal(info.streamSize, xz.length);
  for (let n = 0; n < xz.length; n += 7) {
    assert.throws(
      () => inspectXz(xz.subarray(0, n)),
      (e) => e instanceof FormatError && e.format === 'xz',
    );
  }
});

test('multi-block streams (xz -T2 --block-size) are walked block by block and decode', async () => {
  const data = Buffer.alloc(300_000, 7);
  const xz = run('xz', ['-T2', '--block-size=100000', '--x86', '--lzma2', '-c'], data);
  const info = inspectXz(xz);
  assert.equal(info.blocks.length, 3);
  assert.ok(info.blocks.every((b) => b.x86 && b.dictSize === 8 * MiB && b.uncompressedSize === 100_000));
  assert.deepEqual(Buffer.from(await decompress(xz)), data);
});
