import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InProcessCoordinator } from '../../src/pipeline/single-flight.js';

test('concurrent callers on one key share one lookup and one work', async () => {
  const c = new InProcessCoordinator();
  let lookups = 0;
  let works = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const call = () =>
    c.once(
      'k',
      async () => {
        lookups++;
        return undefined;
      },
      async () => {
        works++;
        await gate;
        return 'signed';
      },
    );
  const all = Promise.all([call(), call(), call()]);
  await new Promise((r) => setImmediate(r));
  assert.equal(c.size, 1);
  release();
  assert.deepEqual(await all, ['signed', 'signed', 'signed']);
  assert.equal(lookups, 1);
  assert.equal(works, 1);
  assert.equal(c.size, 0);
});

test('a lookup hit skips work; different keys run independently', async () => {
  const c = new InProcessCoordinator();
  let works = 0;
  const w = async () => {
    works++;
    return 'w';
  };
  assert.equal(await c.once('a', async () => 'cached', w), 'cached');
  assert.deepEqual(
    await Promise.all([c.once('b', async () => undefined, w), c.once('c', async () => undefined, w)]),
    ['w', 'w'],
  );
  assert.equal(works, 2);
});

test('a failure is shared by waiters but not remembered', async () => {
  const c = new InProcessCoordinator();
  let n = 0;
  const failing = () =>
    c.once(
      'k',
      async () => undefined,
      async () => {
        n++;
        throw Object.assign(new Error('boom'), { code: 'X' });
      },
    );
  const r = await Promise.allSettled([failing(), failing()]);
  assert.deepEqual(
    r.map((x) => x.status),
    ['rejected', 'rejected'],
  );
  assert.equal(n, 1);
  assert.equal(
    await c.once(
      'k',
      async () => undefined,
      async () => 'ok',
    ),
    'ok',
  );
});
