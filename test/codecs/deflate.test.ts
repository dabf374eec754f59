import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { createDeflateRaw, deflateRawSync } from 'node:zlib';
import { FormatError } from '../../src/errors.js';
import {
  DEFLATE_LEVEL,
  DEFLATE_MAX_RATIO,
  DEFLATE_RATIO_MIN_SIZE,
  crc32,
  deflateRaw,
  deflateSettingsKey,
  inflateRaw,
} from '../../src/codecs/deflate.js';
import { peCorpus } from '../helpers/env.js';

const corpus = peCorpus();
const CORPUS_SKIP = typeof corpus === 'string' ? corpus : undefined;

async function codeOf(p: Promise<unknown>): Promise<FormatError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof FormatError, String(e));
    assert.equal(e.format, 'deflate');
    return e;
  }
  assert.fail('expected an error');
}

/** Python's zlib as the independent raw-deflate decoder (wbits -15). */
function pythonInflate(data: Uint8Array): Buffer {
  return execFileSync(
    'python3',
    ['-c', 'import sys,zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read(), -15))'],
    {
      input: data,
      maxBuffer: 1 << 30,
    },
  );
}

test('deflateRaw output is raw deflate that Python zlib inflates to the input; inflateRaw reads it back', async () => {
  const files =
    typeof corpus === 'string' ? [] : corpus.slice(0, 3).map((f) => new Uint8Array(readFileSync(f)));
  const inputs = [
    new Uint8Array(0),
    new TextEncoder().encode('hello'),
    new Uint8Array(300_000).fill(0x41),
    ...files,
  ];
  for (const data of inputs) {
    const z = await deflateRaw(data);
    assert.equal(z.byteOffset, 0);
    assert.equal(z.buffer.byteLength, z.length, 'a buffer of its own (transferable)');
    assert.deepEqual(new Uint8Array(pythonInflate(z)), data);
    assert.deepEqual(await inflateRaw(z), data);
  }
});

test('deflateRaw at DEFLATE_LEVEL matches zlib at that level byte for byte', async () => {
  const data = new Uint8Array(200_000).map((_, i) => (i * 7919) % 251);
  assert.deepEqual(await deflateRaw(data), new Uint8Array(deflateRawSync(data, { level: DEFLATE_LEVEL })));
  assert.deepEqual(await deflateRaw(data, 1), new Uint8Array(deflateRawSync(data, { level: 1 })));
  assert.match(deflateSettingsKey(), new RegExp(`^deflate:${DEFLATE_LEVEL}:zlib=\\d`));
});

test('crc32 is the zip CRC-32 (Python zlib.crc32), also when continued', () => {
  const data = new TextEncoder().encode('The quick brown fox jumps over the lazy dog');
  assert.equal(crc32(data), 0x414fa339);
  assert.equal(crc32(data.subarray(10), crc32(data.subarray(0, 10))), 0x414fa339);
  const big = createHash('sha512').update('x').digest();
  const py = execFileSync('python3', ['-c', 'import sys,zlib; print(zlib.crc32(sys.stdin.buffer.read()))'], {
    input: big,
  });
  assert.equal(crc32(big), Number(py.toString()));
});

/** A raw deflate stream of `total` zero bytes, made in 16 MiB pieces (the test never holds the output). */
async function zeroBomb(total: number): Promise<Uint8Array> {
  const z = createDeflateRaw({ level: 9 });
  const out: Buffer[] = [];
  z.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve) => z.on('end', resolve));
  const piece = Buffer.alloc(16 << 20);
  for (let n = 0; n < total; n += piece.length)
    if (!z.write(piece)) await new Promise((r) => z.once('drain', r));
  z.end();
  await done;
  return new Uint8Array(Buffer.concat(out));
}

test('CODEC_OUTPUT_TOO_LARGE: the inflate stops at the cap, long before a 256 MiB bomb is decoded', async () => {
  const bomb = await zeroBomb(256 << 20);
  assert.ok(bomb.length < 1 << 20, `bomb is ${bomb.length} bytes`);
  const e = await codeOf(inflateRaw(bomb, { maxOutputSize: 8 << 20, maxRatio: Infinity }));
  assert.equal(e.code, 'CODEC_OUTPUT_TOO_LARGE');
  // The running count when it stopped: at most one 64 KiB output chunk past the cap.
  const produced = e.details?.produced as number;
  assert.ok(produced > 8 << 20 && produced <= (8 << 20) + (64 << 10), `stopped after ${produced} bytes`);
});

test('CODEC_RATIO_TOO_HIGH: a stream over the ratio limit stops once past the ratio floor', async () => {
  const z = new Uint8Array(deflateRawSync(new Uint8Array(16 << 20)));
  assert.ok((16 << 20) / z.length > DEFLATE_MAX_RATIO);
  const e = await codeOf(inflateRaw(z));
  assert.equal(e.code, 'CODEC_RATIO_TOO_HIGH');
  const produced = e.details?.produced as number;
  assert.ok(
    produced > DEFLATE_RATIO_MIN_SIZE && produced <= DEFLATE_MAX_RATIO * z.length + (64 << 10),
    `${produced}`,
  );
  // Under the floor, the same ratio is fine.
  const small = new Uint8Array(deflateRawSync(new Uint8Array(DEFLATE_RATIO_MIN_SIZE)));
  assert.equal((await inflateRaw(small)).length, DEFLATE_RATIO_MIN_SIZE);
  assert.equal((await inflateRaw(z, { maxRatio: 2000 })).length, 16 << 20);
});

test('CODEC_CORRUPT, CODEC_TRAILING_DATA: invalid, truncated and over-long streams', async () => {
  const z = new Uint8Array(deflateRawSync(new TextEncoder().encode('hello hello hello')));
  assert.equal((await codeOf(inflateRaw(new Uint8Array([0xff, 0xff, 0xff])))).code, 'CODEC_CORRUPT');
  assert.equal((await codeOf(inflateRaw(z.subarray(0, z.length - 2)))).code, 'CODEC_CORRUPT');
  assert.equal((await codeOf(inflateRaw(new Uint8Array(0)))).code, 'CODEC_CORRUPT');
  assert.equal((await codeOf(inflateRaw(new Uint8Array([...z, 1, 2, 3])))).code, 'CODEC_TRAILING_DATA');
});

test('options are validated', async () => {
  assert.throws(() => inflateRaw(new Uint8Array(2), { maxOutputSize: -1 }), RangeError);
  assert.throws(() => inflateRaw(new Uint8Array(2), { maxRatio: 0 }), RangeError);
  assert.throws(() => deflateRaw(new Uint8Array(2), 10), RangeError);
});

test('corpus PE files round-trip through deflateRaw/inflateRaw', { skip: CORPUS_SKIP }, async () => {
  const files = (corpus as string[]).filter((_, i) => i % 10 === 0);
  for (const f of files) {
    const data = new Uint8Array(readFileSync(f));
    assert.deepEqual(await inflateRaw(await deflateRaw(data)), data, f);
  }
});
