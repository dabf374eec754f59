/**
 * The memory budget (src/pipeline/budget.ts): its accounting, and that the pipeline stays within it by
 * that accounting — a release of many locales holds no more than its concurrency's worth of buffers, a
 * tiny budget still signs (streaming instead of holding), byte-identically, and every lease is returned.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { validateConfig } from '../../src/config/validate.js';
import { MemoryBudget, roundedSize } from '../../src/pipeline/budget.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import { DEFAULT_LOCALE_CONCURRENCY } from '../../src/pipeline/release.js';
import type { ResolvedLocale } from '../../src/release/request.js';
import { tempDir } from '../helpers/env.js';
import { buildMar, BZ2, CONFIG_PATH, fixtureMar, LOCALES, newCache } from './_support.js';

test('MemoryBudget: refuses what does not fit, forces and counts, returns each lease once', () => {
  const b = new MemoryBudget(100);
  const a = b.tryTake(60)!;
  assert.equal(b.tryTake(41), undefined, 'over the limit is refused');
  const c = b.tryTake(40)!;
  assert.equal(b.inUse, 100);
  const f = b.force(10);
  assert.equal(b.forced, 1);
  assert.equal(b.peak, 110);
  a.release();
  a.release(); // twice is harmless
  assert.equal(b.inUse, 50);
  c.release();
  f.release();
  assert.equal(b.inUse, 0);
  assert.throws(() => new MemoryBudget(0), { code: 'CONFIG_INVALID' });
});

test('MemoryBudget: shared buffers are reused after release and counted while held', () => {
  const b = new MemoryBudget(1000);
  const x = b.trySharedBuffer(400)!;
  assert.ok(x.buffer.buffer instanceof SharedArrayBuffer);
  assert.equal(b.inUse, 400);
  assert.equal(b.trySharedBuffer(700), undefined, 'no room beside the held one');
  const backing = x.buffer.buffer;
  x.release();
  assert.equal(b.inUse, 0);
  const y = b.trySharedBuffer(300)!;
  assert.equal(y.buffer.buffer, backing, 'a kept buffer big enough is reused');
  assert.equal(y.buffer.length, 300);
  y.release();
  // Kept buffers never crowd out a lease: a big one drops them.
  const z = b.trySharedBuffer(1000)!;
  assert.equal(b.inUse, 1000);
  z.release();
});

test('MemoryBudget: a discarded buffer (a failed run may still have readers) is never handed out again', () => {
  const b = new MemoryBudget(1000);
  const x = b.trySharedBuffer(400)!;
  const backing = x.buffer.buffer;
  x.discard();
  x.release(); // after discard: nothing more
  assert.equal(b.inUse, 0);
  const y = b.trySharedBuffer(400)!;
  assert.notEqual(y.buffer.buffer, backing);
  y.release();
  // A reused buffer bigger than asked is counted whole.
  const z = b.trySharedBuffer(300)!;
  assert.equal(z.buffer.buffer, y.buffer.buffer);
  assert.equal(z.bytes, 400);
  assert.equal(b.inUse, 400);
  z.release();
});

test('MemoryBudget: a new buffer of 1 MiB or more is rounded up (at most 1/8), so a slightly bigger input reuses it', () => {
  const MiB = 1024 * 1024;
  assert.equal(roundedSize(MiB - 1), MiB - 1, 'small buffers as asked');
  assert.equal(roundedSize(MiB), MiB);
  assert.equal(roundedSize(17_816_429), 18 * MiB, 'a 17.8 MB MAR: steps of 2 MiB');
  for (const n of [MiB + 1, 3 * MiB + 5, 17_816_429, 900 * MiB + 1]) {
    assert.ok(roundedSize(n) >= n && roundedSize(n) <= n * 1.125, `${n}`);
  }
  const b = new MemoryBudget(64 * MiB);
  const x = b.trySharedBuffer(17_816_429)!;
  assert.equal(x.buffer.length, 17_816_429);
  assert.equal(x.bytes, 18 * MiB, 'counted as allocated');
  assert.equal(b.inUse, 18 * MiB);
  const backing = x.buffer.buffer;
  x.release();
  // The next locale's input, a few KiB bigger (before: a new buffer per locale, RSS grew with each).
  const y = b.trySharedBuffer(17_821_053)!;
  assert.equal(y.buffer.buffer, backing);
  assert.equal(y.buffer.length, 17_821_053);
  y.release();
  // Where the rounded size does not fit, exactly what was asked.
  const tight = new MemoryBudget(17_900_000);
  const z = tight.trySharedBuffer(17_816_429)!;
  assert.equal(z.bytes, 17_816_429);
  z.release();
});

test('config limits.memoryBudget is validated (at least 1 MiB)', () => {
  const base = { profiles: {} };
  assert.throws(() => validateConfig({ ...base, limits: { memoryBudget: 1000 } }, 'c.json'), /memoryBudget/);
  validateConfig({ ...base, limits: { memoryBudget: 64 * 1024 * 1024 } }, 'c.json');
});

/** `n` locales (copies of the sample MARs, so each is assembled: the output tier is off). */
function release(dir: string, n: number): ResolvedLocale[] {
  const out = [];
  for (let i = 0; i < n; i++) {
    const src = fixtureMar(LOCALES[i % LOCALES.length]!);
    const input = join(dir, 'in', `l${i}.mar`);
    mkdirSync(join(dir, 'in'), { recursive: true });
    copyFileSync(src, input);
    const outputDir = join(dir, 'out', `l${i}`);
    out.push({ locale: `l${i}`, input, outputDir, output: join(outputDir, 'complete.mar') });
  }
  return out;
}

async function signWith(dir: string, budget: number | undefined, n: number) {
  const config = await loadConfig(CONFIG_PATH);
  const p = await Pipeline.create({
    config,
    cache: newCache(join(dir, 'cache')),
    outputCache: false,
    // Audited, as every CLI run is: the plan then reads each input whole into a lease (its sha256).
    audit: { locale: async () => undefined },
    ...(budget !== undefined ? { memoryBudget: budget } : {}),
  });
  try {
    const locales = release(dir, n);
    const rm = await signRelease({
      signer: p,
      release: 'budget',
      source: dir,
      locales,
      outDir: join(dir, 'out'),
      profile: 'dev',
    });
    assert.equal(rm.totals.failed, 0, JSON.stringify(rm.locales.find((l) => !l.ok)?.error));
    return { locales, stats: p.stats().memory, forced: p.budget.forced };
  } finally {
    await p.close();
    assert.equal(p.budget.inUse, 0, 'every lease returned once the pipeline is closed');
  }
}

test('a release of many locales holds only its concurrency worth of buffers, and returns every lease', async () => {
  const dir = tempDir('budget-');
  const n = 12;
  const { locales, stats } = await signWith(dir, undefined, n);
  const largest = Math.max(...locales.map((l) => statSync(l.input).size));
  // What is still leased after the release is the hot entries' (hot.ts), and they were used: the
  // copies share their signed entries. Closing the pipeline returns those too (checked in signWith).
  assert.equal(stats.inUse, stats.hot.bytes, 'every lease returned but the hot entries');
  assert.ok(stats.hot.hits > 0, 'repeated entries were served from memory');
  assert.ok(stats.peak > 0, 'the pipeline leased its buffers from the budget');
  // Per running locale (DEFAULT_LOCALE_CONCURRENCY at a time): its output buffer and its window's stored
  // bytes (≤ its input), with a margin for the signed entries' growth; and the plan's one input buffer
  // (it plans the next inputs while locales run). Twelve locales' worth would be ~4× this.
  const C = DEFAULT_LOCALE_CONCURRENCY;
  // The hot entries only grow here (far below their capacity): at the peak they held at most what they hold now.
  const bound = C * (2 * largest + 64 * 1024) + largest + stats.hot.bytes;
  assert.ok(stats.peak <= bound, `peak ${stats.peak} bytes in flight > ${bound} (${C} locales' worth)`);
});

test('a budget smaller than one locale still signs, within the budget but for each locale head entry, byte-identically', async () => {
  const roomy = await signWith(tempDir('budget-roomy-'), undefined, 4);
  const limit = 16 * 1024; // below every input and output: nothing is held whole, the window is one entry
  const tight = await signWith(tempDir('budget-tight-'), limit, 4);
  assert.equal(tight.stats.inUse, 0);
  assert.equal(tight.stats.budget, limit);
  // Only a locale's window head may exceed the budget (so a locale always progresses): at most one
  // entry per running locale over the limit.
  const largestEntry = 16 * 1024;
  const C = DEFAULT_LOCALE_CONCURRENCY;
  assert.ok(
    tight.stats.peak <= limit + C * largestEntry,
    `peak ${tight.stats.peak} > budget ${limit} + ${C} entries`,
  );
  assert.ok(tight.stats.peak < roomy.stats.peak, 'the tight budget held less than the roomy one');
  for (let i = 0; i < roomy.locales.length; i++)
    assert.deepEqual(
      readFileSync(tight.locales[i]!.output),
      readFileSync(roomy.locales[i]!.output),
      `${roomy.locales[i]!.locale}: same bytes under either budget`,
    );
});

test('passthrough checks still reading earlier entries count: the window head waits for them rather than going over the budget', async () => {
  const dir = tempDir('budget-checks-');
  // 24 incompressible passthrough entries of 64 KiB (bz2): each one alone is over the 16 KiB budget, and
  // each is checked (decoded) in the pool before the MAR is signed — one thread, so checks queue up.
  const entry = 64 * 1024;
  const input = join(dir, 'many.mar');
  await buildMar(
    input,
    Array.from({ length: 24 }, (_, i) => ({ name: `data/f${i}.bin`, data: randomBytes(entry), codec: BZ2 })),
  );
  const config = await loadConfig(CONFIG_PATH);
  const limit = 16 * 1024;
  const p = await Pipeline.create({
    config,
    threads: 1,
    cache: newCache(join(dir, 'cache')),
    outputCache: false,
    memoryBudget: limit,
  });
  try {
    const m = await p.signLocale({ profile: 'dev', input, output: join(dir, 'out.mar') });
    assert.equal(m.totals.passthrough, 24);
    const stats = p.stats().memory;
    assert.equal(stats.inUse, 0, 'every lease returned');
    // bz2 of random bytes is a little bigger than its input: one stored entry, with room for that.
    const stored = Math.max(...m.entries.map((e) => e.inputSize));
    assert.ok(stored < 2 * entry);
    assert.ok(stats.peak <= limit + stored, `peak ${stats.peak} > budget ${limit} + one entry (${stored})`);
  } finally {
    await p.close();
  }
});
