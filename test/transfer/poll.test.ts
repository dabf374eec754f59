import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nextPollWait } from '../../src/transfer/remote-release.js';

test('status polls: 100 ms after a change, doubling while nothing changes, never over the cap', () => {
  const waits: number[] = [];
  let w = 100;
  for (const changed of [false, false, false, false, true, false]) waits.push((w = nextPollWait(w, changed)));
  assert.deepEqual(waits, [200, 400, 500, 500, 100, 200]);
  assert.equal(nextPollWait(400, false, 1000), 800, 'a larger pollMs lets the wait grow further');
  assert.equal(nextPollWait(50, true, 50), 50, 'a pollMs under 100 ms is the wait after a change too');
  assert.equal(nextPollWait(50, false, 50), 50);
});
