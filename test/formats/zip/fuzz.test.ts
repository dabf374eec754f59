import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { applyMutation, mutationArb } from '../mar/mutate.js';
import { applyFieldEdit, fieldEditArb, fieldsOf, readZipProperty, seedZips } from './mutate.js';

const seeds = seedZips();
const fields = await Promise.all(seeds.map((s) => fieldsOf(s)));
const seedArb = fc.nat({ max: seeds.length - 1 });

test('every seed zip reads cleanly, is reproduced byte for byte and rewrites', async () => {
  for (const s of seeds) assert.equal(await readZipProperty(s), 'ok');
});

test('mutated zips (flips, truncations, u32 edits, inserts, deletes) give only typed ZIP errors', async () => {
  await fc.assert(
    fc.asyncProperty(seedArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), async (i, muts) => {
      let b = seeds[i]!;
      for (const { pos, m } of muts) b = applyMutation(b, pos, m);
      await readZipProperty(b);
    }),
    { numRuns: 600, seed: 0x5a4950 },
  );
});

test('header field edits (EOCD, zip64 end, central and local headers) give only typed ZIP errors', async () => {
  await fc.assert(
    fc.asyncProperty(seedArb, fc.array(fieldEditArb, { minLength: 1, maxLength: 3 }), async (i, edits) => {
      let b = seeds[i]!;
      for (const e of edits) b = applyFieldEdit(b, fields[i]!, e);
      await readZipProperty(b);
    }),
    { numRuns: 600, seed: 0x31 },
  );
});

test('random bytes behind a local-header or end-record magic give only typed ZIP errors', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom([0x50, 0x4b, 3, 4], [0x50, 0x4b, 5, 6]),
      fc.uint8Array({ maxLength: 300 }),
      async (magic, tail) => {
        await readZipProperty(new Uint8Array([...magic, ...tail]));
      },
    ),
    { numRuns: 300, seed: 7 },
  );
});
