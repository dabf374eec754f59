import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { FormatError } from '../../../src/errors.js';
import { BufferSource, type ByteSource } from '../../../src/io/byte-source.js';
import { ZIP_MAX_FILE_SIZE, readZip } from '../../../src/formats/zip/index.js';
import { extractZip, readEntryContent } from '../../../src/zip/index.js';
import { PROJECT_ROOT, tempDir } from '../../helpers/env.js';
import { rawZip } from './raw-zip.js';

const BAD_DIR = join(PROJECT_ROOT, 'fixtures', 'zip', 'bad');
const badFiles = readdirSync(BAD_DIR)
  .filter((f) => f.endsWith('.zip'))
  .sort();

/** Codes found only when an entry is decoded or extracted: readZip accepts these files. */
const EXTRACT_CODES = new Set(['ZIP_CRC_MISMATCH', 'ZIP_SIZE_MISMATCH', 'ZIP_UNSAFE_EXTRACT']);

async function codeOf(
  p: Promise<unknown>,
): Promise<{ code: string; offset: number | undefined; err: unknown }> {
  try {
    await p;
  } catch (err) {
    return { code: (err as { code: string }).code, offset: (err as FormatError).offset, err };
  }
  assert.fail('expected an error');
}

test('fixtures/zip/bad has a file for every reader error code', () => {
  const codes = new Set(badFiles.map((f) => f.split('.')[0]));
  for (const c of [
    'ZIP_TRUNCATED',
    'ZIP_NO_EOCD',
    'ZIP_TRAILING_BYTES',
    'ZIP_AMBIGUOUS_EOCD',
    'ZIP_MULTI_DISK',
    'ZIP_ZIP64_INVALID',
    'ZIP_CENTRAL_DIRECTORY_OUT_OF_BOUNDS',
    'ZIP_CENTRAL_DIRECTORY_TOO_LARGE',
    'ZIP_CENTRAL_DIRECTORY_INVALID',
    'ZIP_TOO_MANY_ENTRIES',
    'ZIP_EXTRA_FIELD_INVALID',
    'ZIP_BAD_NAME',
    'ZIP_DUPLICATE_NAME',
    'ZIP_ENCRYPTED',
    'ZIP_UNSUPPORTED_METHOD',
    'ZIP_STORED_SIZE_MISMATCH',
    'ZIP_ENTRY_TOO_LARGE',
    'ZIP_RATIO_TOO_HIGH',
    'ZIP_LOCAL_HEADER_OUT_OF_BOUNDS',
    'ZIP_LOCAL_HEADER_INVALID',
    'ZIP_LOCAL_HEADER_MISMATCH',
    'ZIP_ENTRY_OUT_OF_BOUNDS',
    'ZIP_ENTRY_OVERLAP',
    'ZIP_UNREFERENCED_BYTES',
    'ZIP_DESCRIPTOR_INVALID',
    'ZIP_CRC_MISMATCH',
    'ZIP_SIZE_MISMATCH',
    'ZIP_UNSAFE_EXTRACT',
  ])
    assert.ok(codes.has(c), `no fixture for ${c}`);
});

for (const f of badFiles) {
  const expected = f.split('.')[0]!;
  test(`fixtures/zip/bad/${f} → ${expected}`, async () => {
    const bytes = await readFile(join(BAD_DIR, f));
    const read = await readZip(new BufferSource(bytes)).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (expected.startsWith('ZIP_') && !EXTRACT_CODES.has(expected)) {
      assert.ok(read instanceof FormatError, `readZip accepted ${f}`);
      assert.equal(read.code, expected, read.message);
      assert.equal(read.format, 'zip');
      assert.ok(read.offset === undefined || (Number.isInteger(read.offset) && read.offset >= 0));
    } else {
      // Readable, but must fail on extraction, leaving no output.
      assert.equal(read, undefined, `readZip rejected ${f}: ${String(read)}`);
      const dest = join(tempDir(), 'out');
      const r = await codeOf(extractZip(join(BAD_DIR, f), dest));
      assert.equal(r.code, expected, String(r.err));
      assert.equal(existsSync(dest), false, 'no partial output');
    }
  });
}

test('ZIP_TOO_LARGE: a source over the limit is refused before any read', async () => {
  let reads = 0;
  const huge: ByteSource = {
    size: ZIP_MAX_FILE_SIZE + 1,
    read: async () => {
      reads++;
      return new Uint8Array(0);
    },
  };
  assert.equal((await codeOf(readZip(huge))).code, 'ZIP_TOO_LARGE');
  assert.equal(reads, 0);
});

test('ZIP_EXTRACT_TOO_LARGE: declared sizes over the total cap are refused before writing', async () => {
  const content = new Uint8Array(3000).fill(1);
  const path = join(tempDir(), 'big.zip');
  await writeFile(
    path,
    rawZip({
      entries: [
        { name: 'a', content },
        { name: 'b', content },
      ],
    }),
  );
  const dest = join(tempDir(), 'out');
  const r = await codeOf(extractZip(path, dest, { maxTotalSize: 5000 }));
  assert.equal(r.code, 'ZIP_EXTRACT_TOO_LARGE');
  assert.equal(existsSync(dest), false);
});

test('the ratio limit has a floor: a small, highly compressible entry reads', async () => {
  const info = await readZip(
    new BufferSource(rawZip({ entries: [{ name: 'zeros', method: 8, content: new Uint8Array(1 << 20) }] })),
  );
  assert.equal(info.entries[0]!.uncompressedSize, 1 << 20);
  assert.ok(info.entries[0]!.compressedSize * 200 < 1 << 20, 'the entry is over the ratio, under the floor');
});

test('options.maxRatio / maxEntrySize tighten the declared-size checks', async () => {
  const z = new BufferSource(rawZip({ entries: [{ name: 'a', method: 8, content: new Uint8Array(5000) }] }));
  assert.equal((await codeOf(readZip(z, { maxEntrySize: 4999 }))).code, 'ZIP_ENTRY_TOO_LARGE');
  assert.ok(await readZip(z, { maxEntrySize: 5000 }));
});

test('a lying declared size stops the inflate one byte past it (bomb cost bounded)', async () => {
  const bytes = await readFile(join(BAD_DIR, 'ZIP_SIZE_MISMATCH.zip'));
  const src = new BufferSource(bytes);
  const info = await readZip(src);
  const r = await codeOf(readEntryContent(src, info.entries[0]!));
  assert.equal(r.code, 'ZIP_SIZE_MISMATCH');
  assert.match(String(r.err), /more than its declared 1000 bytes/);
});

test('allowUnsafeNames lists a traversal name; extraction still refuses it', async () => {
  const path = join(BAD_DIR, 'ZIP_BAD_NAME.dotdot.zip');
  const info = await readZip(new BufferSource(await readFile(path)), { allowUnsafeNames: true });
  assert.equal(info.entries[0]!.name, '../../evil.sh');
  const dest = join(tempDir(), 'out');
  assert.equal((await codeOf(extractZip(path, dest))).code, 'ZIP_BAD_NAME');
  assert.equal(existsSync(dest), false);
});
