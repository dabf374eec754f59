/**
 * Shared by the property tests (fuzz.test.ts) and the long fuzz run (test/fuzz/mar.fuzz.ts):
 * seed MARs, fast-check mutations of them, and the property that readMar either returns a
 * self-consistent MarInfo or throws a FormatError with a MAR_ code — never anything else.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { FormatError } from '../../../src/errors.js';
import type { ByteSource } from '../../../src/io/byte-source.js';
import { readEntryBytes, readMar, signableRanges, type MarInfo } from '../../../src/formats/mar/index.js';
import { PEER_MAR_DIR } from '../../helpers/env.js';
import { pib, rawMar } from './raw-mar.js';

const enc = new TextEncoder();

export function seedMars(): Uint8Array[] {
  const seeds = [
    rawMar({ entries: [{ name: 'a', data: enc.encode('hello') }] }),
    rawMar({
      signatures: [
        { id: 2, length: 32 },
        { id: 1, length: 16 },
      ],
      entries: [
        { name: 'empty' },
        { name: 'dir/b.txt', data: enc.encode('bbbb'), flags: 0o755 },
        { name: 'c', data: enc.encode('cc') },
      ],
    }),
    rawMar({ style: 'old', entries: [{ name: 'x/y', data: enc.encode('old style') }] }),
    rawMar({
      additional: null,
      signatures: [{ id: 2, length: 8 }],
      entries: [{ name: 'n', data: enc.encode('z') }],
    }),
    rawMar({
      additional: [{ id: 1, data: pib('chan', '1.0', false) }],
      entries: [{ name: 'p', data: enc.encode('q') }],
    }),
    rawMar({ additional: [], entries: [{ name: 'k', data: new Uint8Array(40).fill(7) }] }),
  ];
  for (const rel of [
    'firefox-libmar/multiple_file.mar',
    'firefox-libmar/signed_pib.mar',
    'firefox-libmar/signed_no_pib.mar',
    'firefox-libmar/no_pib.mar',
    'build-mar/test-xz.mar',
    'firefox-updater/old_version.mar',
  ]) {
    const p = `${PEER_MAR_DIR}/${rel}`;
    if (existsSync(p)) seeds.push(new Uint8Array(readFileSync(p)));
  }
  return seeds;
}

export type Mutation =
  | { kind: 'flip'; at: number; xor: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'u32'; at: number; value: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; n: number };

const interestingU32 = fc.oneof(
  fc.constantFrom(
    0,
    1,
    7,
    8,
    12,
    13,
    14,
    20,
    104,
    127,
    128,
    2048,
    2049,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    0xfffffff0,
  ),
  fc.nat({ max: 4096 }),
  fc.integer({ min: 0, max: 0xffffffff }),
);

/** Positions are fractions of the length so one mutation applies to any seed. */
export const mutationArb: fc.Arbitrary<{ pos: number; m: Mutation }> = fc.record({
  // Half uniform over the file, half biased toward the start (the header), never the magic itself.
  pos: fc.oneof(
    fc.noBias(fc.integer({ min: 0, max: 999_999 })).map((n) => n / 1_000_000),
    fc.integer({ min: 0, max: 999_999 }).map((n) => n / 1_000_000),
  ),
  m: fc.oneof(
    fc.record({
      kind: fc.constant('flip' as const),
      at: fc.constant(0),
      xor: fc.integer({ min: 1, max: 255 }),
    }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.constant(0) }),
    fc.record({ kind: fc.constant('u32' as const), at: fc.constant(0), value: interestingU32 }),
    fc.record({
      kind: fc.constant('insert' as const),
      at: fc.constant(0),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
    fc.record({
      kind: fc.constant('delete' as const),
      at: fc.constant(0),
      n: fc.integer({ min: 1, max: 16 }),
    }),
  ),
});

/** Apply one mutation at a fraction of the length, after the first `keep` bytes (the magic). */
export function applyMutation(bytes: Uint8Array, pos: number, m: Mutation, keep = 4): Uint8Array {
  const at = Math.min(bytes.length, keep + Math.floor(pos * Math.max(0, bytes.length - keep)));
  const out = new Uint8Array(bytes);
  switch (m.kind) {
    case 'flip':
      out[at] = out[at]! ^ m.xor;
      return out;
    case 'truncate':
      return out.subarray(0, at);
    case 'u32': {
      if (at + 4 > out.length) return out;
      new DataView(out.buffer).setUint32(at, m.value >>> 0);
      return out;
    }
    case 'insert': {
      const r = new Uint8Array(out.length + m.bytes.length);
      r.set(out.subarray(0, at));
      r.set(m.bytes, at);
      r.set(out.subarray(at), at + m.bytes.length);
      return r;
    }
    case 'delete': {
      const n = Math.min(m.n, out.length - at);
      const r = new Uint8Array(out.length - n);
      r.set(out.subarray(0, at));
      r.set(out.subarray(at + n), at);
      return r;
    }
  }
}

/** Also mutate a header u32 directly (offset_to_index, file_size, counts, lengths) more often than chance. */
export const headerEditArb = fc.record({
  field: fc.constantFrom(4, 8, 12, 16, 20, 24, 28),
  value: interestingU32,
});

export function applyHeaderEdit(bytes: Uint8Array, e: { field: number; value: number }): Uint8Array {
  const out = new Uint8Array(bytes);
  if (e.field + 4 <= out.length) new DataView(out.buffer).setUint32(e.field, e.value >>> 0);
  return out;
}

/** A BufferSource that also asserts every read is in range and counts bytes read. */
export class CountingSource implements ByteSource {
  bytesRead = 0;
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    assert.ok(
      Number.isInteger(offset) &&
        Number.isInteger(length) &&
        offset >= 0 &&
        length >= 0 &&
        offset + length <= this.bytes.length,
      `reader asked for [${offset}, +${length}) of ${this.bytes.length} bytes`,
    );
    this.bytesRead += length;
    return this.bytes.subarray(offset, offset + length);
  }
}

function checkInfo(info: MarInfo, size: number): void {
  assert.ok(info.entries.length > 0);
  for (const e of info.entries) {
    assert.ok(
      e.offset >= info.dataStart && e.offset + e.size <= info.indexOffset,
      'entry inside the data area',
    );
  }
  assert.ok(info.indexOffset < size);
  if (info.style === 'modern') {
    const ranges = signableRanges(info);
    const last = ranges[ranges.length - 1]!;
    assert.equal(last.offset + last.length, size);
  }
}

/** The property: a typed MAR error, or a consistent result whose entries can all be read. */
export async function readMarProperty(bytes: Uint8Array): Promise<'ok' | string> {
  const src = new CountingSource(bytes);
  let info: MarInfo;
  try {
    info = await readMar(src);
  } catch (e) {
    if (!(e instanceof FormatError) || e.format !== 'mar' || !e.code.startsWith('MAR_')) throw e;
    assert.ok(
      e.offset === undefined || (Number.isInteger(e.offset) && e.offset >= 0),
      `bad offset ${e.offset}`,
    );
    // Bounded work: the reader never reads more than the file (plus its small fixed header).
    assert.ok(
      src.bytesRead <= bytes.length + 64,
      `read ${src.bytesRead} bytes of a ${bytes.length}-byte file`,
    );
    return e.code;
  }
  assert.ok(src.bytesRead <= bytes.length + 64, `read ${src.bytesRead} bytes of a ${bytes.length}-byte file`);
  checkInfo(info, bytes.length);
  for (const e of info.entries) assert.equal((await readEntryBytes(src, e)).length, e.size);
  return 'ok';
}
