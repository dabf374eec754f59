/**
 * Recipes (split a container into skeleton + entry blobs, rebuild byte for byte, hostile recipes refused
 * by code) and the cache store's blob kind (digest checked on put and read, resumable receive,
 * counted by stats, checked by verify, pruned).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsCacheStore } from '../../cache/fs-store.js';
import { openArchive } from '../../src/archive/registry.js';
import { BufferSource } from '../../src/io/byte-source.js';
import {
  encodeRecipe,
  parseRecipe,
  rebuild,
  splitContainer,
  type Recipe,
} from '../../src/transfer/recipe.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
// target.zip joins when zip is registered in src/archive/registry.ts: splitting uses openArchive only.
const FIXTURES = ['de/complete.mar', 'en-US/complete.mar'].map((f) =>
  join(PROJECT_ROOT, 'fixtures', 'release', f),
);

async function chunks(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const c of it) out.push(c);
  return Buffer.concat(out);
}

for (const path of FIXTURES) {
  test(`split and rebuild ${path.split('/').slice(-2).join('/')} byte for byte`, async () => {
    const bytes = readFileSync(path);
    const { recipe, skeleton } = await splitContainer(new BufferSource(bytes), path);
    assert.equal(recipe.sha256, sha(bytes));
    assert.ok(recipe.entries.length > 0);
    assert.equal(skeleton.length + recipe.entries.reduce((n, e) => n + e.size, 0), bytes.length);
    // The skeleton is small: headers and index only.
    assert.ok(skeleton.length < bytes.length / 4, `skeleton ${skeleton.length} of ${bytes.length}`);
    const blobs = new Map<string, Uint8Array>([[sha(skeleton), skeleton]]);
    for (const e of recipe.entries) blobs.set(e.sha256, bytes.subarray(e.offset, e.offset + e.size));
    const parsed = parseRecipe(encodeRecipe(recipe));
    assert.deepEqual(parsed, recipe);
    const out = Buffer.alloc(recipe.size);
    await rebuild(
      parsed,
      async (d) => blobs.get(d)!,
      async (b, p) => void out.set(b, p),
    );
    assert.ok(out.equals(bytes));
  });
}

test('split with known digests (a signed output and its manifest) reads no entry and gives the same recipe', async () => {
  const bytes = readFileSync(FIXTURES[1]!);
  const { recipe } = await splitContainer(new BufferSource(bytes));
  const archive = await openArchive(new BufferSource(bytes));
  const byName = new Map(
    archive.entries.map((e) => [e.name, recipe.entries.find((r) => r.offset === e.offset)?.sha256]),
  );
  let read = 0;
  const source = new BufferSource(bytes);
  const counting = Object.assign(Object.create(source) as BufferSource, {
    read: (offset: number, length: number) => {
      read += length;
      return source.read(offset, length);
    },
  });
  const known = await splitContainer(counting, 'output', {
    sha256: recipe.sha256,
    entry: (name, size) =>
      archive.entries.find((e) => e.name === name)?.size === size ? byName.get(name) : undefined,
  });
  assert.deepEqual(known.recipe, recipe);
  const entryBytes = recipe.entries.reduce((n, e) => n + e.size, 0);
  assert.ok(
    read < bytes.length - entryBytes / 2,
    `read ${read} of ${bytes.length} bytes (entries ${entryBytes})`,
  );
  // A digest it does not know (another size) is hashed from the bytes as before.
  const partial = await splitContainer(new BufferSource(bytes), 'output', {
    sha256: recipe.sha256,
    entry: () => undefined,
  });
  assert.deepEqual(partial.recipe, recipe);
});

test('rebuild refuses a piece that is not what the recipe names', async () => {
  const bytes = readFileSync(FIXTURES[0]!);
  const { recipe, skeleton } = await splitContainer(new BufferSource(bytes));
  const bad = Buffer.from(bytes);
  const e = recipe.entries[0]!;
  await assert.rejects(
    rebuild(
      recipe,
      async (d) =>
        d === sha(skeleton) ? skeleton : d === e.sha256 ? randomBytes(e.size) : bad.subarray(0, 0),
      async () => undefined,
    ),
    { name: 'FormatError', code: 'RECIPE_DIGEST' },
  );
});

test('hostile recipes are refused by code', () => {
  const base: Recipe = {
    format: 'marsign-recipe',
    version: 1,
    container: 'mar',
    size: 100,
    sha256: 'a'.repeat(64),
    skeleton: { size: 80, sha256: 'b'.repeat(64) },
    entries: [
      { offset: 10, size: 10, sha256: 'c'.repeat(64) },
      { offset: 40, size: 10, sha256: 'd'.repeat(64) },
    ],
  };
  const enc = (r: unknown) => Buffer.from(JSON.stringify(r));
  assert.deepEqual(parseRecipe(enc(base)), base);
  const cases: [string, unknown, string][] = [
    ['not json', '{', 'RECIPE_SCHEMA'],
    ['unknown field', { ...base, extra: 1 }, 'RECIPE_SCHEMA'],
    ['bad digest', { ...base, sha256: 'A'.repeat(64) }, 'RECIPE_SCHEMA'],
    ['overlap', { ...base, entries: [base.entries[0], { ...base.entries[1], offset: 15 }] }, 'RECIPE_LAYOUT'],
    [
      'past the end',
      { ...base, entries: [base.entries[0], { ...base.entries[1], offset: 95 }] },
      'RECIPE_LAYOUT',
    ],
    ['empty entry', { ...base, entries: [{ ...base.entries[0], size: 0 }] }, 'RECIPE_LAYOUT'],
    ['skeleton size', { ...base, skeleton: { ...base.skeleton, size: 79 } }, 'RECIPE_LAYOUT'],
    ['negative', { ...base, size: -1 }, 'RECIPE_SCHEMA'],
  ];
  for (const [what, doc, code] of cases)
    assert.throws(
      () => parseRecipe(typeof doc === 'string' ? Buffer.from(doc) : enc(doc)),
      { name: 'FormatError', code },
      what,
    );
});

test('blob store: a blob of several chunks is read straight into its buffer, and refused when edited or cut', async () => {
  const store = new FsCacheStore({ root: tempDir(), hmacSecret: randomBytes(32) });
  const big = randomBytes(2.5 * 1024 * 1024 + 7); // three 1 MiB reads, the last one short
  await store.putBlob(sha(big), big);
  assert.ok(Buffer.from((await store.getBlob(sha(big)))!).equals(big));
  const reader = (await store.openBlob(sha(big)))!;
  assert.ok((await chunks(reader.chunks())).equals(big), 'chunks() gives the same bytes');
  await reader.close();
  // One byte changed in the last chunk: a miss (the file is removed), never the bad bytes.
  const edited = Buffer.from(big);
  edited[edited.length - 1] = (edited.at(-1) ?? 0) ^ 1;
  writeFileSync(store.blobPath(sha(big)), edited);
  assert.equal(await store.getBlob(sha(big)), undefined);
  assert.equal(await store.blobSize(sha(big)), undefined);
  // Cut short after it was opened: readInto refuses it too.
  await store.putBlob(sha(big), big);
  const cut = (await store.openBlob(sha(big)))!;
  writeFileSync(store.blobPath(sha(big)), big.subarray(0, 1024 * 1024 + 3));
  await assert.rejects(cut.readInto(new Uint8Array(big.length)), { code: 'BLOB_CORRUPT' });
  await cut.close();
  await assert.rejects(
    (async () => {
      await store.putBlob(sha(big), big);
      const r = (await store.openBlob(sha(big)))!;
      try {
        await r.readInto(new Uint8Array(10));
      } finally {
        await r.close();
      }
    })(),
    RangeError,
  );
});

test('blob store: digest checked on put and read, resumable receive, stats, verify, prune', async () => {
  const root = tempDir();
  const store = new FsCacheStore({ root, hmacSecret: randomBytes(32) });
  const a = randomBytes(3000);
  await assert.rejects(store.putBlob(sha(randomBytes(4)), a), {
    name: 'UsageError',
    code: 'BLOB_DIGEST_MISMATCH',
  });
  assert.deepEqual(await store.putBlob(sha(a), a), { created: true });
  assert.deepEqual(await store.putBlob(sha(a), a), { created: false });
  assert.ok(Buffer.from((await store.getBlob(sha(a)))!).equals(a));

  // A receive cut after 1000 bytes keeps them; the next one continues there; a wrong offset is refused.
  const b = randomBytes(5000);
  const r1 = await store.receiveBlob(sha(b), { size: b.length, offset: 0, body: [b.subarray(0, 1000)] });
  assert.deepEqual(r1, { complete: false, offset: 1000, created: false });
  assert.equal(await store.uploadOffset(sha(b)), 1000);
  await assert.rejects(store.receiveBlob(sha(b), { size: b.length, offset: 500, body: [] }), {
    code: 'BLOB_UPLOAD_OFFSET',
  });
  const r2 = await store.receiveBlob(sha(b), { size: b.length, offset: 1000, body: [b.subarray(1000)] });
  assert.deepEqual(r2, { complete: true, offset: 5000, created: true });
  assert.equal(await store.blobSize(sha(b)), 5000);
  // Whole bytes hashing otherwise: refused, nothing kept.
  const c = randomBytes(100);
  await assert.rejects(store.receiveBlob(sha(randomBytes(3)), { size: 100, offset: 0, body: [c] }), {
    code: 'BLOB_DIGEST_MISMATCH',
  });
  await assert.rejects(store.receiveBlob(sha(c), { size: 10, offset: 0, body: [c] }), {
    code: 'BLOB_SIZE_MISMATCH',
  });

  const s = await store.stats();
  assert.deepEqual(s.byKind?.blob, { entries: 2, bytes: 8000 });

  // A blob edited in place: verify reports it, a read is a miss and removes it.
  writeFileSync(store.blobPath(sha(a)), Buffer.concat([a.subarray(1), Buffer.from([0])]));
  const v = await store.verify();
  assert.deepEqual(v.bad, [{ key: sha(a), kind: 'blob', reason: 'payload-sha256' }]);
  const reader = (await store.openBlob(sha(a)))!;
  await assert.rejects(chunks(reader.chunks()), { code: 'BLOB_CORRUPT' });
  await reader.close();
  assert.equal(await store.blobSize(sha(a)), undefined);

  const p = await store.prune(0);
  assert.equal(p.removed, 1);
  assert.equal((await store.stats()).entries, 0);
});
