import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SideHasher, sideHashStats } from '../../src/pipeline/side-hash.js';
import { tempDir } from '../helpers/env.js';

const sum = (tool: string, file: string): string =>
  spawnSync(tool, [file], { encoding: 'utf8' }).stdout.split(' ')[0]!;

test('SideHasher: shared bytes are hashed on the thread and match sha512sum/sha256sum', async () => {
  const dir = await tempDir();
  const side = new SideHasher();
  try {
    const buf = SideHasher.alloc(3 * 1024 * 1024 + 17);
    randomBytes(buf.length).copy(buf);
    const file = join(dir, 'bytes.bin');
    writeFileSync(file, buf);
    const before = { ...sideHashStats };
    const [h512, h256] = await Promise.all([side.digest(buf, 'sha512'), side.digest(buf, 'sha256')]);
    assert.equal(h512, sum('sha512sum', file));
    assert.equal(h256, sum('sha256sum', file));
    assert.equal(sideHashStats.threaded, before.threaded + 2);
    // A view into the middle of the shared buffer hashes only that range.
    const part = buf.subarray(1000, 2_000_000);
    writeFileSync(file, part);
    assert.equal(await side.digest(part, 'sha512'), sum('sha512sum', file));
  } finally {
    await side.close();
  }
});

test('SideHasher: a digest over ranges hashes them in order (openssl over their concatenation); digests spread over the threads', async () => {
  const dir = await tempDir();
  const side = new SideHasher(2);
  try {
    const buf = SideHasher.alloc(5 * 1024 * 1024);
    randomBytes(buf.length).copy(buf);
    // Like a MAR's signed stream: the header without the signature bytes, then everything after them.
    const view = buf.subarray(100); // offsets are within the view given
    const ranges = [
      { offset: 0, length: 20 },
      { offset: 28, length: 8 },
      { offset: 548, length: view.length - 548 },
    ];
    const file = join(dir, 'signed.bin');
    writeFileSync(file, Buffer.concat(ranges.map((r) => view.subarray(r.offset, r.offset + r.length))));
    const want = spawnSync('openssl', ['dgst', '-sha384', '-r', file], { encoding: 'utf8' }).stdout.split(
      ' ',
    )[0];
    // Both threads running (a digest goes to a running one first), then two at once: the second goes to
    // the thread with nothing queued.
    for (let i = 0; side.running < 2 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(side.running, 2, 'both side threads started');
    const [a, b] = await Promise.all([
      side.digestRanges(view, 'sha384', ranges),
      side.digestRanges(view, 'sha384', ranges),
    ]);
    assert.equal(a, want);
    assert.equal(b, want);
    assert.deepEqual(side.answered, [1, 1], 'one digest on each thread');
    await assert.rejects(side.digestRanges(view, 'sha384', [{ offset: 10, length: view.length }]), /outside/);
  } finally {
    await side.close();
  }
});

test('SideHasher: unshared bytes, a closed hasher and a bad algorithm fall back to inline hashing', async () => {
  const dir = await tempDir();
  const side = new SideHasher();
  const plain = randomBytes(100_000);
  const file = join(dir, 'plain.bin');
  writeFileSync(file, plain);
  let before = { ...sideHashStats };
  assert.equal(await side.digest(plain, 'sha512'), sum('sha512sum', file));
  assert.equal(sideHashStats.inline, before.inline + 1);
  assert.equal(sideHashStats.threaded, before.threaded);
  // An algorithm the thread rejects is not silently wrong: the inline path throws the same way.
  const shared = SideHasher.alloc(16);
  await assert.rejects(side.digest(shared, 'no-such-hash'));
  await side.close();
  before = { ...sideHashStats };
  shared.set(plain.subarray(0, 16));
  writeFileSync(file, shared);
  assert.equal(await side.digest(shared, 'sha512'), sum('sha512sum', file));
  assert.equal(sideHashStats.inline, before.inline + 1);
});
