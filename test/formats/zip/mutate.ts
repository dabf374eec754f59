/**
 * Shared by the zip property tests (fuzz.test.ts) and the long fuzz run (test/fuzz/mar.fuzz.ts): seed
 * zips, field edits aimed at their headers, and the property: readZip either throws a FormatError with a
 * ZIP_ code, or returns entries that tile the file, whose content decodes or fails with a CodedError, and
 * that the writer reproduces byte for byte (unchanged) and rewrites readably (one entry replaced).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { CodedError, FormatError } from '../../../src/errors.js';
import { BufferSource } from '../../../src/io/byte-source.js';
import {
  ZIP_METHOD_DEFLATE,
  endTemplateOf,
  readEntrySpan,
  readZip,
  zipLayout,
  type ZipInfo,
  type ZipOutputEntry,
} from '../../../src/formats/zip/index.js';
import { readEntryContent } from '../../../src/zip/file.js';
import { PROJECT_ROOT } from '../../helpers/env.js';
import { CountingSource } from '../mar/mutate.js';
import { concat, extraRecord, rawZip } from './raw-zip.js';

const enc = new TextEncoder();

export function seedZips(): Uint8Array[] {
  const seeds = [
    rawZip({ entries: [{ name: 'a.txt', content: enc.encode('hello') }] }),
    rawZip({
      entries: [
        { name: 'dir/', externalAttributes: 0o40755 * 0x10000 },
        { name: 'dir/b.bin', method: 8, content: new Uint8Array(600).fill(3), descriptor: {} },
        { name: 'c', content: enc.encode('cc'), descriptor: { signature: false } },
        { name: 'é.txt', method: 8, content: enc.encode('utf-8 name'), comment: enc.encode('file comment') },
      ],
      comment: enc.encode('archive comment'),
    }),
    rawZip({
      entries: [
        {
          name: 'z64',
          content: enc.encode('zip64 everywhere'),
          zip64: { local: true, central: ['uncompressedSize', 'compressedSize', 'localHeaderOffset'] },
        },
        { name: 'd64', method: 8, content: enc.encode('descriptor64'), descriptor: { zip64: true } },
      ],
      zip64End: { sentinels: true },
    }),
    rawZip({
      entries: [
        { name: 'x', content: enc.encode('1'), extra: extraRecord(0xcafe, enc.encode('abcd')) },
        {
          name: 'y',
          method: 8,
          content: enc.encode('22'),
          local: { extra: extraRecord(0x5455, new Uint8Array(9)) },
        },
      ],
      centralOrder: [1, 0],
    }),
    rawZip({ entries: [] }),
  ];
  const target = join(PROJECT_ROOT, 'fixtures', 'release', 'target.zip');
  if (existsSync(target)) seeds.push(new Uint8Array(readFileSync(target)));
  return seeds;
}

/** Absolute offsets and widths of every header field of a valid seed, for targeted edits. */
export async function fieldsOf(bytes: Uint8Array): Promise<[number, 2 | 4][]> {
  const info = await readZip(new BufferSource(bytes));
  const out: [number, 2 | 4][] = [];
  const add = (base: number, layout: (2 | 4)[]): void => {
    let at = base;
    for (const w of layout) {
      out.push([at, w]);
      at += w;
    }
  };
  // §4.3.16 EOCD after its signature; §4.3.12 central record; §4.3.7 local header.
  add(info.eocd.offset + 4, [2, 2, 2, 2, 4, 4, 2]);
  for (const e of info.entries) {
    add(e.centralOffset, [4, 2, 2, 2, 2, 2, 2, 4, 4, 4, 2, 2, 2, 2, 2, 4, 4]);
    add(e.localHeaderOffset, [4, 2, 2, 2, 2, 2, 4, 4, 4, 2, 2]);
  }
  if (info.zip64) {
    add(info.zip64.offset, [4, 4, 4, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]);
    add(info.zip64.locatorOffset, [4, 4, 4, 4, 4]);
  }
  return out;
}

const interesting = fc.oneof(
  fc.constantFrom(0, 1, 8, 20, 22, 30, 45, 46, 0x800, 0xffff, 0x7fffffff, 0xfffffff0, 0xffffffff),
  fc.nat({ max: 4096 }),
  fc.integer({ min: 0, max: 0xffffffff }),
);

export const fieldEditArb = fc.record({ field: fc.nat(), value: interesting });

export function applyFieldEdit(
  bytes: Uint8Array,
  fields: readonly [number, 2 | 4][],
  e: { field: number; value: number },
): Uint8Array {
  const out = new Uint8Array(bytes);
  if (fields.length === 0) return out;
  const [at, w] = fields[e.field % fields.length]!;
  if (at + w > out.length) return out;
  const dv = new DataView(out.buffer);
  if (w === 2) dv.setUint16(at, e.value & 0xffff, true);
  else dv.setUint32(at, e.value >>> 0, true);
  return out;
}

const CONTENT_CAP = 4 * 1024 * 1024;

function checkTiling(info: ZipInfo, size: number): void {
  const sorted = [...info.entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  let pos = 0;
  for (const e of sorted) {
    assert.equal(e.localHeaderOffset, pos, 'entries tile the file');
    assert.equal(e.dataOffset, e.localHeaderOffset + e.local.length);
    assert.ok(e.end >= e.dataOffset + e.compressedSize);
    pos = e.end;
  }
  assert.equal(pos, info.centralDirectoryOffset);
  assert.equal(
    info.centralDirectoryOffset + info.centralDirectorySize,
    info.zip64?.offset ?? info.eocd.offset,
  );
  assert.equal(info.eocd.offset + 22 + info.comment.length, size);
}

/** The property: a typed ZIP error, or a zip the writer reproduces and rewrites. */
export async function readZipProperty(bytes: Uint8Array): Promise<string> {
  const src = new CountingSource(bytes);
  let info: ZipInfo;
  const bound = (): void =>
    assert.ok(
      src.bytesRead <= 3 * bytes.length + 1024,
      `read ${src.bytesRead} bytes of a ${bytes.length}-byte file`,
    );
  try {
    info = await readZip(src);
  } catch (e) {
    if (!(e instanceof FormatError) || e.format !== 'zip' || !e.code.startsWith('ZIP_')) throw e;
    assert.ok(
      e.offset === undefined || (Number.isInteger(e.offset) && e.offset >= 0),
      `bad offset ${e.offset}`,
    );
    bound();
    return e.code;
  }
  bound();
  checkTiling(info, bytes.length);

  // Unchanged, the layout reproduces the input byte for byte.
  const spans = await Promise.all(info.entries.map((e) => readEntrySpan(src, e)));
  const physical = info.entries
    .map((e, i) => ({ e, span: spans[i]! }))
    .sort((a, b) => a.e.localHeaderOffset - b.e.localHeaderOffset);
  const same = zipLayout(
    physical.map(({ e }) => ({ entry: e })),
    endTemplateOf(info),
  );
  assert.deepEqual(concat([...physical.map((p) => p.span), same.tail]), bytes, 'unchanged layout = input');

  let outcome = 'ok';
  for (const e of info.entries) {
    try {
      await readEntryContent(src, e, { maxOutputSize: CONTENT_CAP });
    } catch (err) {
      if (!(err instanceof CodedError)) throw err;
      outcome = `ok+${err.code}`;
    }
  }

  // One entry replaced: the rewrite reads back, with the new content, the other spans unchanged.
  const target = physical.find(({ e }) => !e.isDirectory);
  if (target) {
    const content = enc.encode('replaced by the fuzz property');
    const data = target.e.method === ZIP_METHOD_DEFLATE ? new Uint8Array(deflateRawSync(content)) : content;
    const outputs: ZipOutputEntry[] = physical.map(({ e }) =>
      e === target.e
        ? {
            entry: e,
            replacement: {
              crc32: crc32(content),
              compressedSize: data.length,
              uncompressedSize: content.length,
            },
          }
        : { entry: e },
    );
    const layout = zipLayout(outputs, endTemplateOf(info));
    const out = concat([
      ...layout.entries.flatMap((p, i) =>
        p.localHeader ? [p.localHeader, data, p.descriptor ?? new Uint8Array(0)] : [physical[i]!.span],
      ),
      layout.tail,
    ]);
    assert.equal(out.length, layout.fileSize);
    const back = await readZip(new BufferSource(out));
    for (const e of back.entries) {
      const old = info.entries[e.index]!;
      assert.equal(e.name, old.name);
      if (old === target.e) assert.deepEqual(await readEntryContent(new BufferSource(out), e), content);
      else assert.deepEqual(await readEntrySpan(new BufferSource(out), e), spans[old.index]);
    }
  }
  return outcome;
}
