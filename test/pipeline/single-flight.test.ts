import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PassthroughChecks } from '../../src/pipeline/check-flight.js';
import { InProcessCoordinator, joinUnlessAborted } from '../../src/pipeline/single-flight.js';

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

/**
 * Two callers with their own signals (two locales, two releases in one worker) on one key: the first
 * starts the work under its signal, the second joins it; the first caller is aborted mid-work.
 */
async function joinedAfterAbort(kind: 'coordinator' | 'checks', abortErr: Error) {
  const c = new InProcessCoordinator();
  const checks = new PassthroughChecks();
  const a = new AbortController();
  const b = new AbortController();
  let works = 0;
  const run = (signal: AbortSignal) => {
    const work = async () => {
      works++;
      await new Promise((r) => setTimeout(r, 20));
      if (signal.aborted) throw abortErr;
    };
    return joinUnlessAborted(
      () =>
        kind === 'coordinator'
          ? c.once(
              'k',
              async () => undefined,
              async () => {
                await work();
                return 'signed';
              },
            )
          : checks.once('k', async () => false, work),
      signal,
    );
  };
  const first = run(a.signal);
  const second = run(b.signal);
  a.abort();
  return {
    first: await first.catch((e: unknown) => e),
    second: await second.catch((e: unknown) => e),
    works,
    b,
  };
}

for (const kind of ['coordinator', 'checks'] as const)
  test(`${kind}: a caller that joined work another caller's abort ended does the work itself, not fail`, async () => {
    const abort = Object.assign(new Error('The task has been aborted'), { name: 'AbortError' });
    const r = await joinedAfterAbort(kind, abort);
    assert.equal(r.first, abort, 'the aborted caller gets its abort');
    assert.equal(r.second, kind === 'coordinator' ? 'signed' : 'decoded', 'the other caller gets a result');
    assert.equal(r.works, 2, 'the work ran again for the caller that was not aborted');
  });

test('joinUnlessAborted: a failure that is not an abort is shared, not retried', async () => {
  const c = new InProcessCoordinator();
  let works = 0;
  const fail = () =>
    joinUnlessAborted(
      () =>
        c.once(
          'k',
          async () => undefined,
          async () => {
            works++;
            await new Promise((r) => setTimeout(r, 10));
            throw Object.assign(new Error('bad PE'), { code: 'POLICY_NOT_PE' });
          },
        ),
      new AbortController().signal,
    );
  const got = await Promise.allSettled([fail(), fail()]);
  assert.deepEqual(
    got.map((g) => g.status),
    ['rejected', 'rejected'],
  );
  assert.equal(works, 1);
});

test('joinUnlessAborted: a caller whose own signal aborted is not retried', async () => {
  const own = new AbortController();
  own.abort();
  let calls = 0;
  await assert.rejects(
    joinUnlessAborted(async () => {
      calls++;
      throw Object.assign(new Error('aborted'), { code: 'ABORTED' });
    }, own.signal),
    { code: 'ABORTED' },
  );
  assert.equal(calls, 1);
});

test('joinUnlessAborted: work that others keep aborting is tried a bounded number of times, then its abort is thrown', async () => {
  let calls = 0;
  await assert.rejects(
    joinUnlessAborted(async () => {
      calls++;
      throw Object.assign(new Error('The task has been aborted'), { name: 'AbortError' });
    }, new AbortController().signal),
    { name: 'AbortError' },
  );
  assert.equal(calls, 8);
});
