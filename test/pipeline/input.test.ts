import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { rangeId, readInput } from '../../src/pipeline/input.js';
import { SideHasher, sideHashStats } from '../../src/pipeline/side-hash.js';
import { tempDir } from '../helpers/env.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('readInput: the whole file and every range hashed while reading (with and without the side thread)', async () => {
  const dir = tempDir();
  const file = join(dir, 'input.bin');
  const bytes = randomBytes(9 * 1024 * 1024 + 333); // several read chunks, a partial last one
  writeFileSync(file, bytes);
  const ranges = [
    { offset: 0, size: 10 },
    { offset: 10, size: 5 * 1024 * 1024 }, // spans chunks
    { offset: 7 * 1024 * 1024, size: 0 },
    { offset: 8 * 1024 * 1024, size: bytes.length - 8 * 1024 * 1024 }, // ends at EOF
  ];
  const side = new SideHasher();
  try {
    while (!side.online) await sleep(5);
    for (const [whole, withSide] of [
      [true, true],
      [false, true],
      [false, false],
      [true, false],
    ] as const) {
      const before = sideHashStats.threaded;
      const snap = await readInput(file, SideHasher.alloc(bytes.length), {
        whole,
        ranges,
        ...(withSide ? { side } : {}),
      });
      const what = `whole=${whole} side=${withSide}`;
      assert.ok(snap.bytes.equals(bytes), what);
      assert.ok(snap.bytes.buffer instanceof SharedArrayBuffer);
      assert.equal(
        snap.sha256,
        whole ? spawnSync('sha256sum', [file], { encoding: 'utf8' }).stdout.split(' ')[0] : undefined,
        what,
      );
      assert.equal(snap.entryDigests.size, ranges.length, what);
      for (const r of ranges)
        assert.equal(
          snap.entryDigests.get(rangeId(r)),
          sha(bytes.subarray(r.offset, r.offset + r.size)),
          `${what} ${rangeId(r)}`,
        );
      if (withSide) assert.ok(sideHashStats.threaded > before, `${what}: the side thread took a share`);
      else assert.equal(sideHashStats.threaded, before, what);
    }
  } finally {
    await side.close();
  }
});

test('readInput refuses a file whose size is not the expected one', async () => {
  const dir = tempDir();
  const file = join(dir, 'input.bin');
  writeFileSync(file, randomBytes(1000));
  await assert.rejects(readInput(file, SideHasher.alloc(999), { whole: true, ranges: [] }), {
    code: 'INPUT_CHANGED',
  });
});
