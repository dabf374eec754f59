/**
 * Hot entries (src/pipeline/hot.ts): signed entries read from the cache twice are kept in memory under the
 * pipeline's budget, handed out as copies, dropped least recently used first and whenever the budget
 * needs the room; a release served from them is byte-identical and reads the cache no more.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { CacheStore } from '../../cache/types.js';
import { loadConfig } from '../../src/config/index.js';
import { MemoryBudget } from '../../src/pipeline/budget.js';
import { finishStats } from '../../src/pipeline/finish.js';
import { HotEntries } from '../../src/pipeline/hot.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import type { ResolvedLocale } from '../../src/release/request.js';
import { tempDir } from '../helpers/env.js';
import { CONFIG_PATH, fixtureMar, LOCALES, newCache } from './_support.js';

const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

test('a key is kept on its second offer, under a lease of the budget, and handed out as a copy', () => {
  const budget = new MemoryBudget(1000);
  const hot = new HotEntries(budget, 500);
  const b = bytes(100, 7);
  hot.offer('k', b, 'sha');
  assert.equal(hot.take('k'), undefined, 'one offer: remembered, not kept');
  assert.equal(budget.inUse, 0);
  hot.offer('k', b, 'sha');
  assert.equal(budget.inUse, 100, 'kept under a lease');
  b.fill(9); // the offerer's buffer is its own again
  const got = hot.take('k')!;
  assert.deepEqual(got.bytes, bytes(100, 7));
  assert.equal(got.sha256, 'sha');
  got.bytes.fill(1); // a taker's copy is its own
  const into = new Uint8Array(100);
  assert.equal(hot.take('k', into)!.bytes, into, 'copied into a buffer of the right size');
  assert.deepEqual(into, bytes(100, 7));
  assert.equal(hot.stats.hits, 2);
  hot.clear();
  assert.equal(budget.inUse, 0, 'clear returns every lease');
});

test('an entry of another size than the slot asking is dropped (the store holds other bytes now); nothing is kept once cleared', () => {
  const budget = new MemoryBudget(1000);
  const hot = new HotEntries(budget, 500);
  hot.offer('k', bytes(100, 7), 'sha');
  hot.offer('k', bytes(100, 7), 'sha');
  assert.equal(hot.size('k'), 100);
  assert.equal(hot.take('k', new Uint8Array(101)), undefined);
  assert.equal(hot.size('k'), undefined, 'dropped');
  assert.equal(budget.inUse, 0);
  hot.clear();
  hot.offer('j', bytes(10, 1), 'sha');
  hot.offer('j', bytes(10, 1), 'sha');
  assert.equal(hot.size('j'), undefined, 'a closed pipeline keeps nothing');
  assert.equal(budget.inUse, 0);
});

test('at capacity the least recently used go first; an entry over the capacity is never kept', () => {
  const budget = new MemoryBudget(10_000);
  const hot = new HotEntries(budget, 250);
  const keep = (k: string, n: number): void => {
    hot.offer(k, bytes(n, 1), k);
    hot.offer(k, bytes(n, 1), k);
  };
  keep('a', 100);
  keep('b', 100);
  hot.take('a'); // a is now the more recently used
  keep('c', 100); // 300 > 250: b goes
  assert.ok(hot.take('a') && hot.take('c'));
  assert.equal(hot.take('b'), undefined);
  keep('huge', 251);
  assert.equal(hot.take('huge'), undefined);
  assert.equal(hot.bytes, 200);
  assert.equal(budget.inUse, 200);
});

test('a budget without room reclaims hot entries before refusing or forcing a lease', () => {
  const budget = new MemoryBudget(1000);
  const hot = new HotEntries(budget, 1000);
  for (const k of ['a', 'b', 'c']) {
    hot.offer(k, bytes(300, 1), k);
    hot.offer(k, bytes(300, 1), k);
  }
  assert.equal(budget.inUse, 900);
  const shared = budget.trySharedBuffer(500);
  assert.ok(shared, 'room made by dropping hot entries');
  assert.equal(hot.take('a'), undefined, 'the least recently used went first');
  assert.equal(hot.take('b'), undefined);
  assert.ok(hot.take('c'));
  assert.equal(budget.inUse, 800);
  const forced = budget.force(500);
  assert.equal(budget.forced, 0, 'the forced lease fitted once the last hot entry went');
  assert.equal(hot.bytes, 0);
  shared.release();
  forced.release();
  assert.equal(budget.inUse, 0);
  // A lease the hot entries cannot make fit takes nothing from them.
  hot.offer('d', bytes(300, 1), 'd');
  hot.offer('d', bytes(300, 1), 'd');
  const other = budget.tryTake(500)!;
  assert.equal(budget.tryTake(600), undefined, '300 + 500 + 600 > 1000 even without the hot entry');
  assert.equal(hot.size('d'), 300, 'kept: dropping it would not have made room');
  other.release();
});

/** A store that counts the payload reads of each key (get and ranged readInto). */
function counting(store: CacheStore): { store: CacheStore; reads: Map<string, number> } {
  const reads = new Map<string, number>();
  const bump = (k: string): void => void reads.set(k, (reads.get(k) ?? 0) + 1);
  const ranged = store.ranged && {
    readInto: (key: string, ...rest: unknown[]) => {
      bump(key);
      return (store.ranged!.readInto as (...a: unknown[]) => unknown)(key, ...rest);
    },
  };
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'ranged') return ranged;
      if (prop === 'get')
        return (key: string) => {
          bump(key);
          return target.get(key);
        };
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: proxy as CacheStore, reads };
}

test('a release served from hot entries is byte-identical and reads each cached entry at most once', async () => {
  const dir = tempDir('hot-');
  const config = await loadConfig(CONFIG_PATH);
  const { store, reads } = counting(newCache(join(dir, 'cache')));
  const p = await Pipeline.create({ config, cache: store, outputCache: false });
  // Two copies of each sample locale: each signed entry is used by at least two locales.
  const locales = (out: string): ResolvedLocale[] =>
    [...LOCALES, ...LOCALES].map((name, i) => {
      const input = join(dir, 'in', `l${i}.mar`);
      mkdirSync(join(dir, 'in'), { recursive: true });
      copyFileSync(fixtureMar(name), input);
      const outputDir = join(dir, out, `l${i}`);
      return { locale: `l${i}`, input, outputDir, output: join(outputDir, 'complete.mar') };
    });
  const run = (out: string) =>
    signRelease({
      signer: p,
      release: 'hot',
      source: dir,
      locales: locales(out),
      outDir: join(dir, out),
      profile: 'dev',
      // One locale at a time: no two locales read the same entry at once (each would read it itself).
      concurrency: 1,
    });
  try {
    const first = await run('out1');
    assert.equal(first.totals.failed, 0);
    reads.clear();
    const hitsBefore = p.stats().memory.hot.hits;
    const second = await run('out2');
    assert.equal(second.totals.failed, 0);
    const signable = second.locales.reduce((n, l) => n + (l.totals?.cached ?? 0), 0);
    assert.ok(signable > 0, 'the second run was served from the cache');
    assert.equal(second.totals.signOperations, 0);
    for (const [key, n] of reads)
      assert.ok(n <= 1, `${key} read ${n} times from the cache in the second run`);
    for (const l of second.locales) {
      const m = JSON.parse(readFileSync(l.manifest!, 'utf8')) as {
        entries: { name: string; action: string }[];
      };
      for (const e of m.entries)
        assert.ok(['cached', 'passthrough'].includes(e.action), `${l.locale} ${e.name}: ${e.action}`);
    }
    const served = p.stats().memory.hot.hits - hitsBefore;
    assert.ok(served >= signable - reads.size, `${served} entries from memory of ${signable}`);
    assert.ok(served > 0);
    for (const l of second.locales)
      assert.deepEqual(
        readFileSync(l.output),
        readFileSync(l.output.replace('/out2/', '/out1/')),
        `${l.locale}: the same bytes from memory as from the cache`,
      );
  } finally {
    await p.close();
  }
  assert.equal(p.budget.inUse, 0);
});

test("a locale's entries, signed and then read back once, are not kept; read a second time, they are, and serve after a prune", async () => {
  const dir = tempDir('hot-once-');
  const config = await loadConfig(CONFIG_PATH);
  const p = await Pipeline.create({ config, cache: newCache(join(dir, 'cache')), outputCache: false });
  try {
    const sign = async (i: number) => {
      const m = await p.signLocale({
        profile: 'dev',
        input: fixtureMar('de'),
        output: join(dir, `o${i}.mar`),
      });
      return { m, hot: p.stats().memory.hot.bytes };
    };
    const cold = await sign(1);
    assert.ok(cold.m.totals.signed > 0);
    assert.equal(cold.hot, 0, 'produced: not a use from the cache');
    assert.equal((await sign(2)).hot, 0, 'read once: remembered, not kept');
    const third = await sign(3);
    assert.ok(third.hot > 0, 'read a second time: kept');
    assert.deepEqual(readFileSync(join(dir, 'o3.mar')), readFileSync(join(dir, 'o1.mar')));
    // The cache emptied under the running pipeline (a prune): the kept entries still serve, their sizes
    // predict the layout (the output is assembled in memory), and nothing is signed again.
    rmSync(join(dir, 'cache'), { recursive: true, force: true });
    const assembled = finishStats.assembled;
    const fourth = await sign(4);
    assert.equal(fourth.m.totals.signOperations, 0);
    assert.equal(finishStats.assembled, assembled + 1, 'assembled in memory from the hot entries');
    assert.deepEqual(readFileSync(join(dir, 'o4.mar')), readFileSync(join(dir, 'o1.mar')));
  } finally {
    await p.close();
  }
});
