import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { FormatError } from '../../../src/errors.js';
import { BufferSource, type ByteSource } from '../../../src/io/byte-source.js';
import { MAR_MAX_ENTRIES, MAR_MAX_FILE_SIZE, readMar } from '../../../src/formats/mar/index.js';
import { extractMar } from '../../../src/mar/file.js';
import { PROJECT_ROOT, SHARED_SKIP, peerMar, tempDir } from '../../helpers/env.js';
import { rawMar } from './raw-mar.js';

const BAD_DIR = join(PROJECT_ROOT, 'fixtures', 'mar', 'bad');
const badFiles = readdirSync(BAD_DIR)
  .filter((f) => f.endsWith('.mar'))
  .sort();

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

test('fixtures/mar/bad has one file per error code it covers', () => {
  assert.ok(badFiles.length >= 30, `only ${badFiles.length} hostile fixtures`);
});

for (const f of badFiles) {
  const expected = f.split('.')[0]!;
  test(`fixtures/mar/bad/${f} → ${expected}`, async () => {
    const bytes = await readFile(join(BAD_DIR, f));
    const read = await readMar(new BufferSource(bytes)).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (expected.startsWith('MAR_') && expected !== 'MAR_UNSAFE_EXTRACT') {
      assert.ok(read instanceof FormatError, `readMar accepted ${f}`);
      assert.equal(read.code, expected, read.message);
      assert.equal(read.format, 'mar');
    } else {
      // Readable, but must fail on extraction, leaving no output.
      assert.equal(read, undefined, `readMar rejected ${f}: ${String(read)}`);
      const dest = join(tempDir(), 'out');
      const r = await codeOf(
        extractMar(join(BAD_DIR, f), dest, { decompress: true, maxOutputSize: 1024 * 1024 }),
      );
      assert.equal(r.code, expected, String(r.err));
      assert.equal(existsSync(dest), false, 'no partial output');
    }
  });
}

const PEER_REJECTS: Record<string, string> = {
  'firefox-libmar/manipulated_frontend_collision.mar': 'MAR_ENTRY_OVERLAP',
  'firefox-libmar/manipulated_backend_collision.mar': 'MAR_ENTRY_OVERLAP',
  'firefox-libmar/manipulated_is_container.mar': 'MAR_ENTRY_OVERLAP',
  'firefox-libmar/manipulated_multiple_collision.mar': 'MAR_ENTRY_OVERLAP',
  'firefox-libmar/manipulated_multiple_collision_first.mar': 'MAR_ENTRY_OVERLAP',
  'firefox-libmar/manipulated_signed.mar': 'MAR_FILE_SIZE_MISMATCH',
  'build-mar/test-xz.2017-07-28.bad-index-size.mar': 'MAR_INDEX_SIZE_MISMATCH',
  'margo/miniMarB.mar': 'MAR_BAD_NAME',
};

for (const [rel, code] of Object.entries(PEER_REJECTS)) {
  test(`peer ${rel} is rejected with ${code}`, { skip: SHARED_SKIP }, async () => {
    const r = await codeOf(readMar(new BufferSource(await readFile(peerMar(rel)))));
    assert.equal(r.code, code, String(r.err));
    assert.equal(typeof r.offset, 'number');
  });
}

test(
  'collision offsets point at the second range (libmar content-collision rule)',
  { skip: SHARED_SKIP },
  async () => {
    const r = await codeOf(
      readMar(
        new BufferSource(await readFile(peerMar('firefox-libmar/manipulated_multiple_collision_first.mar'))),
      ),
    );
    assert.equal(r.offset, 167);
  },
);

test(
  'manipulated_signed.mar is readable with allowSizeMismatch, real size kept for hashing',
  { skip: SHARED_SKIP },
  async () => {
    const info = await readMar(
      new BufferSource(await readFile(peerMar('firefox-libmar/manipulated_signed.mar'))),
      {
        allowSizeMismatch: true,
      },
    );
    assert.equal(info.fileSize, 1194);
    assert.equal(info.declaredFileSize, 1193);
    assert.deepEqual(info.signatures, [{ algorithmId: 2, length: 512, offset: 28 }]);
  },
);

test('miniMarB.mar lists with allowUnsafeNames but never extracts', { skip: SHARED_SKIP }, async () => {
  const info = await readMar(new BufferSource(await readFile(peerMar('margo/miniMarB.mar'))), {
    allowUnsafeNames: true,
  });
  assert.deepEqual(info.entries, [{ name: '/foo/bar', offset: 360, size: 21, flags: 0o1130 }]);
  assert.deepEqual(
    info.signatures.map((s) => [s.algorithmId, s.length]),
    [
      [2, 256],
      [3, 64],
    ],
  );
  assert.equal(info.hasAdditionalHeader, true);
  assert.deepEqual(info.additionalSections, []);
  const dest = join(tempDir(), 'out');
  const r = await codeOf(extractMar(peerMar('margo/miniMarB.mar'), dest));
  assert.equal(r.code, 'MAR_BAD_NAME');
  assert.equal(existsSync(dest), false);
});

test('MAR_TOO_LARGE: a source over 500 MiB is refused before any read', async () => {
  let reads = 0;
  const huge: ByteSource = {
    size: MAR_MAX_FILE_SIZE + 1,
    read: async () => {
      reads++;
      return new Uint8Array(0);
    },
  };
  assert.equal((await codeOf(readMar(huge))).code, 'MAR_TOO_LARGE');
  assert.equal(reads, 0);
});

test('MAR_TOO_MANY_ENTRIES: more than MAR_MAX_ENTRIES index records', async () => {
  const entries = Array.from({ length: MAR_MAX_ENTRIES + 1 }, (_, i) => ({ name: `f${i}` }));
  const r = await codeOf(readMar(new BufferSource(rawMar({ entries }))));
  assert.equal(r.code, 'MAR_TOO_MANY_ENTRIES');
});

test('a zero-length entry may share an offset; a non-empty one may not', async () => {
  const bytes = new TextEncoder().encode('abc');
  const ok = rawMar({
    entries: [
      { name: 'empty', offset: 128 },
      { name: 'a', data: bytes },
    ],
  });
  const info = await readMar(new BufferSource(ok));
  assert.deepEqual(
    info.entries.map((e) => [e.name, e.offset, e.size]),
    [
      ['empty', 128, 0],
      ['a', 128, 3],
    ],
  );
  const bad = rawMar({
    entries: [
      { name: 'one', data: bytes.subarray(0, 1), offset: 128 },
      { name: 'a', data: bytes, offset: 128 },
    ],
  });
  assert.equal((await codeOf(readMar(new BufferSource(bad)))).code, 'MAR_ENTRY_OVERLAP');
});
