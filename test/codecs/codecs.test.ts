import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import {
  compress,
  decodeForSigning,
  decompress,
  decompressWithSettings,
  detectCodec,
  PREFIX_CHECK_BYTES,
  RATIO_FREE_BYTES,
  readSettings,
  settingsKey,
  type CodecSettings,
} from '../../src/codecs/index.js';
import { decodeBz2Streaming } from '../../src/codecs/bz2.js';
import { decodeContext, type DecodeContext } from '../../src/codecs/limits.js';
import { FormatError, PolicyError } from '../../src/errors.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { peCorpus, peerMar, SHARED_SKIP } from '../helpers/env.js';
import {
  bz2WithZeros,
  concat,
  firstBlockHeaderCrcAt,
  marEntries,
  patchWithCrc,
  run,
  xzList,
  xzZeros,
} from './helpers.js';

const MiB = 1024 * 1024;
/** A decode bounded by `bytes` only (no ratio cap). */
const cap = (bytes: number): DecodeContext => decodeContext(0, { maxOutputSize: bytes, maxRatio: Infinity });
// Taken once the test harness (which adds its own handlers) is running, before any codec is used.
let processHandlersAtStart: number[] = [];
before(() => {
  processHandlersAtStart = [
    process.listenerCount('uncaughtException'),
    process.listenerCount('unhandledRejection'),
  ];
});
const corpus = peCorpus();
const CORPUS_SKIP = typeof corpus === 'string' ? corpus : undefined;
/** A small PE32+ (wine), a 0.5 MB PE32 (mingw i686) and an EFI PE32+ application. */
const SAMPLE_NAMES = ['wine64/softpub.dll', 'mingw-i686/libobjc-4.dll', 'efi/shimx64.efi'];
const samples = (): { name: string; data: Uint8Array }[] =>
  typeof corpus === 'string'
    ? []
    : SAMPLE_NAMES.map((n) => {
        const path = corpus.find((p) => p.endsWith('/' + n));
        assert.ok(path, `${n} in the corpus`);
        return { name: n, data: new Uint8Array(readFileSync(path)) };
      });

function assertCodecError(code: string, format?: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (format) assert.equal(e.format, format);
    return true;
  };
}

/** xz -lvv's rendering of a filter chain, as written by `xz --x86 --lzma2=dict=…`. */
function xzChain(s: Extract<CodecSettings, { codec: 'xz' }>): string {
  const dict = s.dictSize % MiB === 0 ? `${s.dictSize / MiB}MiB` : `${s.dictSize / 1024}KiB`;
  return `${s.x86 ? '--x86 ' : ''}--lzma2=dict=${dict}`;
}

const XZ_CHECK_NAMES = { none: 'None', crc32: 'CRC32', crc64: 'CRC64', sha256: 'SHA-256' } as const;

/** Decoded with the real CLI, re-listed with `xz -lvv`: same bytes, same dictionary/BCJ/check. */
function assertXzMatches(stream: Uint8Array, data: Uint8Array, s: CodecSettings): void {
  assert.equal(s.codec, 'xz');
  if (s.codec !== 'xz') return;
  assert.deepEqual(run('xz', ['-dc'], stream), Buffer.from(data));
  const l = xzList(stream);
  assert.equal(l.check, XZ_CHECK_NAMES[s.check]);
  for (const f of l.filters) assert.equal(f, xzChain(s));
}

describe('detectCodec / readSettings / settingsKey', () => {
  test('detects by the first bytes only', () => {
    assert.equal(detectCodec(Buffer.from('BZh91AY&SY')), 'bz2');
    assert.equal(detectCodec(Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1)), 'xz');
    assert.equal(detectCodec(Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a)), 'none');
    assert.equal(detectCodec(Buffer.from('MZ\x90\x00')), 'none');
    assert.equal(detectCodec(new Uint8Array(0)), 'none');
    assert.equal(detectCodec(Buffer.from('BZ')), 'none');
  });

  test('bz2 level is the BZhN digit; a bad digit or block magic is CODEC_CORRUPT', () => {
    for (const n of [1, 5, 9]) {
      const s = readSettings(run('bzip2', [`-${n}`, '-c'], Buffer.from('hello hello hello')));
      assert.deepEqual(s, { codec: 'bz2', level: n });
      assert.equal(settingsKey(s), `bz2:${n}`);
    }
    assert.throws(
      () => readSettings(Buffer.from('BZh0\x31\x41\x59\x26\x53\x59')),
      assertCodecError('CODEC_CORRUPT', 'bz2'),
    );
    assert.throws(
      () => readSettings(Buffer.from('BZh9\x00\x41\x59\x26\x53\x59')),
      assertCodecError('CODEC_CORRUPT', 'bz2'),
    );
    assert.throws(() => readSettings(Buffer.from('BZh9')), assertCodecError('CODEC_CORRUPT', 'bz2'));
  });

  test('xz settings come from the stream and first block headers (xz CLI streams)', () => {
    const data = Buffer.from('x'.repeat(1000));
    const cases: [string[], string][] = [
      [['--x86', '--lzma2', '--check=crc64'], 'xz:dict=8388608:x86:crc64'],
      [['--lzma2', '--check=crc64'], 'xz:dict=8388608:nox86:crc64'],
      [['-7e', '--check=crc32'], 'xz:dict=16777216:nox86:crc32'],
      [['--x86', '--lzma2=preset=6,dict=3MiB', '--check=sha256'], 'xz:dict=3145728:x86:sha256'],
      [['--lzma2=dict=64KiB', '--check=none'], 'xz:dict=65536:nox86:none'],
    ];
    for (const [args, key] of cases)
      assert.equal(settingsKey(readSettings(run('xz', ['-c', ...args], data))), key, args.join(' '));
    assert.equal(settingsKey({ codec: 'none' }), 'none');
  });

  test('malformed xz headers are typed errors with offsets', () => {
    const xz = run('xz', ['-c', '--check=crc64'], Buffer.from('abc'));
    const badHeaderCrc = new Uint8Array(xz);
    badHeaderCrc[8]! ^= 1;
    assert.throws(
      () => readSettings(badHeaderCrc),
      (e) => assertCodecError('CODEC_CORRUPT', 'xz')(e) && (e as FormatError).offset === 6,
    );
    // Check ID 2 is reserved by the spec: unsupported, with a valid header CRC.
    const check2 = patchWithCrc(xz, (b) => (b[7] = 0x02), 6, 8);
    assert.throws(() => readSettings(check2), assertCodecError('CODEC_UNSUPPORTED', 'xz'));
    assert.throws(() => readSettings(xz.subarray(0, 14)), assertCodecError('CODEC_CORRUPT', 'xz'));
  });

  test('filters other than [x86,] lzma2 are CODEC_UNSUPPORTED', async () => {
    const data = Buffer.from('abcdefgh'.repeat(100));
    for (const args of [
      ['--delta=dist=4', '--lzma2'],
      ['--arm', '--lzma2'],
      ['--x86=start=16', '--lzma2'],
    ]) {
      const xz = run('xz', ['-c', ...args], data);
      assert.throws(() => readSettings(xz), assertCodecError('CODEC_UNSUPPORTED', 'xz'), args.join(' '));
      await assert.rejects(decompress(xz), assertCodecError('CODEC_UNSUPPORTED', 'xz'));
    }
  });
});

describe('peer MAR entries (Mozilla, mardor)', { skip: SHARED_SKIP }, () => {
  const expectations: [string, string][] = [
    ['firefox-updater/complete.mar', 'xz:dict=8388608:nox86:crc64'],
    ['firefox-updater/partial.mar', 'xz:dict=8388608:nox86:crc64'],
    ['generated-mardor/gen-mardor-xz-bcj-x86-unsigned.mar', 'xz:dict=8388608:x86:crc64'],
  ];
  for (const [mar, key] of expectations) {
    test(`${mar}: settings, decode = xz -dc, re-encode keeps dictionary/BCJ/check`, async () => {
      const entries = marEntries(peerMar(mar));
      assert.ok(entries.length > 0);
      for (const e of entries) {
        const { data, settings } = await decompressWithSettings(e.bytes);
        assert.equal(settingsKey(settings), key, e.name);
        assert.deepEqual(Buffer.from(data), run('xz', ['-dc'], e.bytes), e.name);
        const again = await compress(data, settings);
        assert.equal(settingsKey(readSettings(again)), key);
        assertXzMatches(again, data, settings);
        // Same xz-utils preset and liblzma as Mozilla's packaging → mostly the very same bytes.
      }
    });
  }

  test('old_version.mar: a 32-byte empty xz stream decodes to nothing and re-encodes to 32 bytes', async () => {
    const [entry] = marEntries(peerMar('firefox-updater/old_version.mar'));
    assert.ok(entry);
    assert.equal(entry.bytes.length, 32);
    const { data, settings } = await decompressWithSettings(entry.bytes);
    assert.equal(data.length, 0);
    assert.equal(settings.codec, 'xz');
    const again = await compress(data, settings);
    assert.equal(again.length, 32);
    assert.equal(run('xz', ['-dc'], again).length, 0);
  });

  test('build-mar test-bz2.mar / test-xz.mar: bzip2 and xz entries match the CLIs', async () => {
    for (const e of marEntries(peerMar('build-mar/test-bz2.mar'))) {
      const { data, settings } = await decompressWithSettings(e.bytes);
      assert.equal(settings.codec, 'bz2');
      assert.deepEqual(Buffer.from(data), run('bzip2', ['-dc'], e.bytes));
      const again = await compress(data, settings);
      assert.deepEqual(run('bzip2', ['-dc'], again), Buffer.from(data));
      assert.equal(again[3], e.bytes[3], 'same BZhN block size');
    }
    for (const e of marEntries(peerMar('build-mar/test-xz.mar'))) {
      const { data, settings } = await decompressWithSettings(e.bytes);
      assert.deepEqual(Buffer.from(data), run('xz', ['-dc'], e.bytes));
      assertXzMatches(await compress(data, settings), data, settings);
    }
  });
});

describe('round trips on corpus PE files', { skip: CORPUS_SKIP }, () => {
  test('bz2 -1/-9: decode of bzip2 CLI output, encode byte-identical to bzip2 -N', async () => {
    for (const { name, data } of samples()) {
      for (const level of [1, 9]) {
        const ref = run('bzip2', [`-${level}`, '-c'], data);
        assert.deepEqual(await decompress(ref), data, name);
        const enc = await compress(data, { codec: 'bz2', level });
        assert.deepEqual(Buffer.from(enc), ref, `${name} -${level}`);
        assert.deepEqual(run('bzip2', ['-dc'], enc), Buffer.from(data));
      }
    }
  });

  const xzSettings: Extract<CodecSettings, { codec: 'xz' }>[] = [
    { codec: 'xz', dictSize: 8 * MiB, x86: true, check: 'crc64' },
    { codec: 'xz', dictSize: 8 * MiB, x86: false, check: 'crc32' },
    { codec: 'xz', dictSize: 16 * MiB, x86: true, check: 'crc64' },
    { codec: 'xz', dictSize: 1 * MiB, x86: false, check: 'none' },
    // No preset has 12 MiB or 3 MiB: the lzma-native path with an explicit dict_size.
    { codec: 'xz', dictSize: 12 * MiB, x86: true, check: 'sha256' },
    { codec: 'xz', dictSize: 3 * MiB, x86: false, check: 'crc64' },
  ];
  test('xz: encode keeps dictionary, BCJ and check (xz -lvv); xz -dc restores the bytes', async () => {
    const [first, second] = samples();
    assert.ok(first && second);
    for (const s of xzSettings) {
      for (const { name, data } of s.dictSize === 8 * MiB ? samples() : [first]) {
        const enc = await compress(data, s);
        assert.deepEqual(readSettings(enc), s, name);
        assertXzMatches(enc, data, s);
        assert.deepEqual(await decompress(enc), data);
      }
    }
  });

  test('xz: preset-6 encode is byte-identical to `xz --x86 --lzma2` (Mozilla default)', async () => {
    for (const { name, data } of samples()) {
      const ref = run('xz', ['--x86', '--lzma2', '--check=crc64', '-c'], data);
      const enc = await compress(data, readSettings(ref));
      assert.deepEqual(Buffer.from(enc), ref, name);
      assert.deepEqual(await decompress(ref), data);
    }
  });
});

describe('hostile and edge inputs', () => {
  const data = new Uint8Array(Buffer.from('MZ'.padEnd(50_000, 'marsign codec test ')));

  test('stored entries: zero-length and a cap', async () => {
    assert.equal((await decompress(new Uint8Array(0))).length, 0);
    const r = await decompressWithSettings(data);
    assert.deepEqual(r.settings, { codec: 'none' });
    assert.deepEqual(r.data, data);
    await assert.rejects(
      decompress(data, { maxOutputSize: 100 }),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE'),
    );
    assert.equal((await compress(new Uint8Array(0), { codec: 'none' })).length, 0);
  });

  test('empty inputs round-trip through both codecs', async () => {
    for (const s of [
      { codec: 'bz2', level: 9 },
      { codec: 'xz', dictSize: 8 * MiB, x86: true, check: 'crc64' },
    ] as CodecSettings[]) {
      const enc = await compress(new Uint8Array(0), s);
      assert.equal(run(s.codec === 'bz2' ? 'bzip2' : 'xz', ['-dc'], enc).length, 0);
      assert.equal((await decompress(enc)).length, 0);
    }
  });

  test('decompression bombs stop at the cap: CODEC_OUTPUT_TOO_LARGE', async () => {
    const zeros = new Uint8Array(16 * MiB);
    const bz = run('bzip2', ['-9', '-c'], zeros);
    const xz = run('xz', ['-c', '--check=crc64'], zeros);
    assert.ok(bz.length < 10_000 && xz.length < 10_000);
    await assert.rejects(
      decompress(bz, { maxOutputSize: MiB }),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE', 'bz2'),
    );
    await assert.rejects(
      decompress(xz, { maxOutputSize: MiB }),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE', 'xz'),
    );
    assert.equal((await decompress(bz, { maxOutputSize: 16 * MiB })).length, 16 * MiB);
    assert.equal((await decompress(xz, { maxOutputSize: 16 * MiB })).length, 16 * MiB);
    await assert.rejects(
      decompress(bz, { maxOutputSize: 16 * MiB - 1 }),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE', 'bz2'),
    );
    await assert.rejects(
      decompress(xz, { maxOutputSize: 16 * MiB - 1 }),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE', 'xz'),
    );
  });

  test('unbzip2-stream fallback (outputs past the WASM limit): same bytes, stops at the cap', async () => {
    const text = run('bzip2', ['-9', '-c'], data);
    assert.deepEqual(await decodeBz2Streaming(text, cap(data.length)), data);
    const bomb = run('bzip2', ['-9', '-c'], new Uint8Array(8 * MiB));
    await assert.rejects(
      decodeBz2Streaming(bomb, cap(MiB)),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE', 'bz2'),
    );
    await assert.rejects(
      decodeBz2Streaming(text.subarray(0, 100), cap(MiB)),
      assertCodecError('CODEC_CORRUPT', 'bz2'),
    );
  });

  test('an xz index that understates the size is CODEC_CORRUPT, not a bigger output', async () => {
    const xz = run('xz', ['-c', '--check=crc64'], new Uint8Array(4 * MiB));
    // Index: 00, count 01, unpadded size VLI, uncompressed size 4 MiB = 80 80 80 02.
    const i = Buffer.from(xz).indexOf(Buffer.from([0x80, 0x80, 0x80, 0x02]), xz.length - 40);
    assert.ok(i > 0);
    const indexStart =
      xz.length - 12 - (new DataView(xz.buffer, xz.byteOffset).getUint32(xz.length - 8, true) + 1) * 4;
    const lying = patchWithCrc(xz, (b) => (b[i + 3] = 0x01), indexStart, xz.length - 16);
    await assert.rejects(
      decompress(lying, { maxOutputSize: 3 * MiB }),
      assertCodecError('CODEC_CORRUPT', 'xz'),
    );
  });

  test('dictionary over 64 MiB (Firefox updater limit) is refused before decoding', async () => {
    const xz = run('xz', ['-c', '--lzma2=dict=64MiB'], data);
    assert.equal(readSettings(xz).codec, 'xz');
    // Block header: size, flags, 21 01 <dict byte>; 28 = 64 MiB, 30 = 128 MiB.
    const at = Buffer.from(xz).indexOf(Buffer.from([0x21, 0x01, 28]), 12) + 2;
    const big = patchWithCrc(xz, (b) => (b[at] = 30), 12, firstBlockHeaderCrcAt(xz));
    const bigSettings = readSettings(big);
    assert.equal(bigSettings.codec === 'xz' ? bigSettings.dictSize : 0, 128 * MiB);
    await assert.rejects(decompress(big), assertCodecError('CODEC_UNSUPPORTED', 'xz'));
    await assert.rejects(
      compress(data, { codec: 'xz', dictSize: 128 * MiB, x86: false, check: 'crc64' }),
      assertCodecError('CODEC_UNSUPPORTED'),
    );
  });

  test('trailing bytes after the stream: CODEC_TRAILING_DATA (garbage, padding, a second stream)', async () => {
    const xz = run('xz', ['-c'], data);
    const bz = run('bzip2', ['-c'], data);
    for (const tail of [Buffer.from('garbage!'), new Uint8Array(4), xz]) {
      await assert.rejects(decompress(concat(xz, tail)), assertCodecError('CODEC_TRAILING_DATA', 'xz'));
    }
    await assert.rejects(
      decompress(concat(xz, Buffer.from('x'))),
      assertCodecError('CODEC_TRAILING_DATA', 'xz'),
    );
    for (const tail of [Buffer.from('garbage!'), new Uint8Array(1), bz]) {
      await assert.rejects(decompress(concat(bz, tail)), (e) => {
        assert.ok(e instanceof FormatError);
        // Random bytes after a bzip2 stream hide its end marker: trailing data or corrupt, never accepted.
        assert.ok(['CODEC_TRAILING_DATA', 'CODEC_CORRUPT'].includes(e.code), e.code);
        return true;
      });
    }
    await assert.rejects(decompress(concat(bz, bz)), assertCodecError('CODEC_TRAILING_DATA', 'bz2'));
  });

  test('corrupt and truncated streams: CODEC_CORRUPT', async () => {
    const xz = run('xz', ['-c', '--check=crc64'], data);
    const bz = run('bzip2', ['-c'], data);
    for (const [stream, format] of [
      [xz, 'xz'],
      [bz, 'bz2'],
    ] as const) {
      const flipped = new Uint8Array(stream);
      flipped[Math.floor(stream.length / 2)]! ^= 0x55;
      await assert.rejects(decompress(flipped), assertCodecError('CODEC_CORRUPT', format));
      await assert.rejects(
        decompress(stream.subarray(0, stream.length - 5)),
        assertCodecError('CODEC_CORRUPT', format),
      );
    }
    // The integrity check itself: flip a byte of the block's CRC64.
    const badCheck = new Uint8Array(xz);
    const indexStart =
      xz.length - 12 - (new DataView(xz.buffer, xz.byteOffset).getUint32(xz.length - 8, true) + 1) * 4;
    badCheck[indexStart - 1]! ^= 1;
    await assert.rejects(decompress(badCheck), assertCodecError('CODEC_CORRUPT', 'xz'));
  });

  test('the Emscripten modules leave no process error handlers behind', async () => {
    const bz = await compress(data, { codec: 'bz2', level: 9 });
    assert.deepEqual(await decompress(bz), data);
    assert.deepEqual(
      [process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection')],
      processHandlersAtStart,
    );
  });

  test('outputs are transferable (own ArrayBuffer, not Node pool slices)', async () => {
    const small = new Uint8Array(Buffer.from('tiny'));
    const outputs = [
      await compress(small, { codec: 'none' }),
      await compress(small, { codec: 'bz2', level: 9 }),
      await compress(small, { codec: 'xz', dictSize: 8 * MiB, x86: false, check: 'crc64' }),
    ];
    outputs.push(...(await Promise.all(outputs.map((x) => decompress(x)))));
    for (const s of outputs) {
      // Node's pool is one shared 8 KiB ArrayBuffer; ours hold one result (xz: +1 overflow sentinel byte).
      assert.equal(s.byteOffset, 0);
      assert.ok(s.buffer.byteLength - s.length <= 1, `buffer ${s.buffer.byteLength} for ${s.length} bytes`);
      const copy = new Uint8Array(s);
      const moved = structuredClone(s, { transfer: [s.buffer as ArrayBuffer] });
      assert.equal(s.length, 0, 'detached after transfer');
      assert.deepEqual(new Uint8Array(moved), copy);
    }
  });
});

describe('codec bombs (issue 10): bounded before and while decoding', () => {
  const GiB = 2 ** 30;
  /** The limit a bz2 bomb of a few hundred bytes gets by default: outputs ≤ RATIO_FREE_BYTES are exempt. */
  const LIMIT = RATIO_FREE_BYTES;

  test('bz2: 1.06 GiB of zeros in < 1 KB → CODEC_RATIO_TOO_HIGH, decoding stops near the limit', async () => {
    const bomb = bz2WithZeros(1.06 * GiB);
    assert.ok(bomb.length < 1500, `bomb of ${bomb.length} bytes`);
    const stats = { decodedBytes: 0 };
    await assert.rejects(decompress(bomb, { stats }), assertCodecError('CODEC_RATIO_TOO_HIGH', 'bz2'));
    // Buffer growth ×4 up to limit + 1: at most 2.25 × the limit was decoded, never the 1.06 GiB.
    assert.ok(stats.decodedBytes > LIMIT, `${stats.decodedBytes}`);
    assert.ok(stats.decodedBytes <= 2.25 * (LIMIT + 1), `decoded ${stats.decodedBytes} bytes`);
  });

  test('xz: a bomb is refused from its index before one byte is decoded', async () => {
    const bomb = xzZeros(64 * MiB);
    const stats = { decodedBytes: 0 };
    await assert.rejects(decompress(bomb, { stats }), assertCodecError('CODEC_RATIO_TOO_HIGH', 'xz'));
    assert.equal(stats.decodedBytes, 0);
  });

  test('maxRatio is configurable (Infinity: off); outputs up to RATIO_FREE_BYTES are exempt; bad values throw', async () => {
    const bz = bz2WithZeros(32 * MiB);
    run('bzip2', ['-t'], bz);
    await assert.rejects(decompress(bz), assertCodecError('CODEC_RATIO_TOO_HIGH', 'bz2'));
    assert.deepEqual(await decompress(bz, { maxRatio: Infinity }), new Uint8Array(32 * MiB));
    assert.equal((await decompress(bz, { maxRatio: 10 ** 6 })).length, 32 * MiB);
    // The size cap still applies when the ratio cap is off, with its own code.
    await assert.rejects(
      decompress(bz, { maxRatio: Infinity, maxOutputSize: 20 * MiB }),
      assertCodecError('CODEC_OUTPUT_TOO_LARGE', 'bz2'),
    );
    assert.equal((await decompress(bz2WithZeros(RATIO_FREE_BYTES))).length, RATIO_FREE_BYTES);
    for (const maxRatio of [0, -1, NaN]) {
      await assert.rejects(decompress(bz, { maxRatio }), RangeError, String(maxRatio));
    }
  });

  test('decodeForSigning: a non-PE stops after the first bz2 block / xz window: POLICY_NOT_PE naming the entry', async () => {
    const isNotPe = (e: unknown): boolean => {
      assert.ok(e instanceof PolicyError, String(e));
      assert.equal(e.code, 'POLICY_NOT_PE');
      assert.deepEqual(e.details, { entry: 'setup.exe' });
      assert.match(e.message, /setup\.exe/);
      return true;
    };
    // The ratio cap off, so only the PE check can stop these.
    const bz = bz2WithZeros(1.06 * GiB);
    const bzStats = { decodedBytes: 0 };
    await assert.rejects(
      decodeForSigning(bz, { name: 'setup.exe', maxRatio: Infinity, stats: bzStats }),
      isNotPe,
    );
    // One 45 MB block of zeros (with its buffer growth), not the 1.06 GiB behind it.
    assert.ok(bzStats.decodedBytes <= 64 * MiB, `decoded ${bzStats.decodedBytes} bytes`);
    const xz = xzZeros(64 * MiB);
    const xzStats = { decodedBytes: 0 };
    await assert.rejects(
      decodeForSigning(xz, { name: 'setup.exe', maxRatio: Infinity, stats: xzStats }),
      isNotPe,
    );
    assert.equal(xzStats.decodedBytes, PREFIX_CHECK_BYTES);
    // Stored entries and short outputs are checked whole.
    await assert.rejects(decodeForSigning(new Uint8Array(100), { name: 'setup.exe' }), isNotPe);
    await assert.rejects(
      decodeForSigning(await compress(new Uint8Array(10), { codec: 'bz2', level: 9 }), { name: 'setup.exe' }),
      isNotPe,
    );
  });

  test('decodeForSigning: real PEs (bz2 block reuse kept, xz) pass with their bytes intact', async () => {
    const pe = buildPe({ arch: 'x64', kind: 'dll', name: 'bombs' });
    for (const s of [
      { codec: 'bz2', level: 9 },
      { codec: 'xz', dictSize: 8 * MiB, x86: true, check: 'crc64' },
      { codec: 'none' },
    ] as CodecSettings[]) {
      const d = await decodeForSigning(await compress(pe, s), { name: 'a.dll' });
      assert.deepEqual(d.data, pe, s.codec);
      assert.equal(d.bz2Blocks !== undefined, s.codec === 'bz2');
    }
  });

  test('a PE followed by 1 GiB of zeros: CODEC_RATIO_TOO_HIGH (bz2 and xz), not signed', async () => {
    const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'bombs' });
    const bz = bz2WithZeros(GiB, run('bzip2', ['-9', '-c'], pe));
    assert.ok(bz.length < 10_000);
    const stats = { decodedBytes: 0 };
    await assert.rejects(
      decodeForSigning(bz, { name: 'a.exe', stats }),
      assertCodecError('CODEC_RATIO_TOO_HIGH', 'bz2'),
    );
    assert.ok(stats.decodedBytes <= 2.25 * (LIMIT + 1), `decoded ${stats.decodedBytes} bytes`);
    await assert.rejects(
      decodeForSigning(xzZeros(64 * MiB, pe), { name: 'a.exe' }),
      assertCodecError('CODEC_RATIO_TOO_HIGH', 'xz'),
    );
  });
});
