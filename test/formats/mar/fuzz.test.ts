import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  applyHeaderEdit,
  applyMutation,
  headerEditArb,
  mutationArb,
  readMarProperty,
  seedMars,
} from './mutate.js';

const seeds = seedMars();
const seedArb = fc.nat({ max: seeds.length - 1 }).map((i) => seeds[i]!);

test('every seed MAR reads cleanly', async () => {
  for (const s of seeds) assert.equal(await readMarProperty(s), 'ok');
});

test('mutated MARs (flips, truncations, u32 edits, inserts, deletes) give only typed MAR errors', async () => {
  await fc.assert(
    fc.asyncProperty(seedArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), async (seed, muts) => {
      let b = seed;
      for (const { pos, m } of muts) b = applyMutation(b, pos, m);
      await readMarProperty(b);
    }),
    { numRuns: 600, seed: 0x4d4152 },
  );
});

test('header field edits (offset_to_index, file_size, counts, lengths) give only typed MAR errors', async () => {
  await fc.assert(
    fc.asyncProperty(
      seedArb,
      fc.array(headerEditArb, { minLength: 1, maxLength: 3 }),
      async (seed, edits) => {
        let b = seed;
        for (const e of edits) b = applyHeaderEdit(b, e);
        await readMarProperty(b);
      },
    ),
    { numRuns: 400, seed: 0x31 },
  );
});

test('random bytes behind a MAR1 magic give only typed MAR errors', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (tail) => {
      const b = new Uint8Array(4 + tail.length);
      b.set([0x4d, 0x41, 0x52, 0x31]);
      b.set(tail, 4);
      await readMarProperty(b);
    }),
    { numRuns: 300, seed: 7 },
  );
});
