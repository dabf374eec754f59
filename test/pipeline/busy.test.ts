/** The pool's busy meter (src/pipeline/busy.ts) on a fake clock, and on the real pool. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BusyMeter } from '../../src/pipeline/busy.js';

function clock(): { now: () => number; at: (ms: number) => void } {
  let t = 10_000;
  return { now: () => t, at: (ms) => (t = ms) };
}

test('busy time over wall time × threads, counting at most `threads` tasks at once', () => {
  const c = clock();
  const m = new BusyMeter(2, 30_000, c.now);
  // 0..4 s: one task (half the pool); 4..8 s: three in flight (one waits in the queue: the pool is full).
  m.begin();
  c.at(14_000);
  m.begin();
  m.begin();
  c.at(18_000);
  assert.ok(Math.abs(m.utilisation() - (4 * 1 + 4 * 2) / (8 * 2)) < 1e-9, String(m.utilisation()));
  assert.ok(Math.abs(m.busySeconds() - 12) < 1e-9);
  m.end();
  m.end();
  m.end();
  // Idle for 2 s more: the same busy time over a longer wall.
  c.at(20_000);
  assert.ok(Math.abs(m.utilisation() - 12 / 20) < 1e-9, String(m.utilisation()));
});

test('the window forgets old work: idle for a whole window reads 0, a busy window reads 1', () => {
  const c = clock();
  const m = new BusyMeter(1, 10_000, c.now);
  m.begin();
  c.at(10_000 + 60_000);
  assert.equal(m.utilisation(), 1);
  m.end();
  c.at(10_000 + 60_000 + 5_000);
  // Half the 10 s window busy (the bucket at the edge is counted in proportion).
  assert.ok(Math.abs(m.utilisation() - 0.5) < 0.11, String(m.utilisation()));
  c.at(10_000 + 60_000 + 11_500);
  assert.equal(m.utilisation(), 0);
  // The lifetime counter keeps everything (Prometheus rate() takes it from there).
  assert.ok(Math.abs(m.busySeconds() - 60) < 1e-9);
  // Work again: the window sees it at once.
  m.begin();
  c.at(10_000 + 60_000 + 16_500);
  assert.ok(Math.abs(m.utilisation() - 0.5) < 0.11, String(m.utilisation()));
});

test('end() without begin() never makes the count negative', () => {
  const c = clock();
  const m = new BusyMeter(1, 10_000, c.now);
  m.end();
  c.at(15_000);
  assert.equal(m.utilisation(), 0);
  assert.equal(m.busySeconds(), 0);
});
