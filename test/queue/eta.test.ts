/** A release's ETA from measured byte rates (src/queue/eta.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { estimateEtaMs } from '../../src/queue/eta.js';

test('no measurement yet: no ETA', () => {
  assert.equal(
    estimateEtaMs([
      { state: 'active', bytesDone: 0, bytesTotal: 1000, elapsedMs: 500 },
      { state: 'queued', bytesDone: 0, bytesTotal: 1000, elapsedMs: undefined },
    ]),
    null,
  );
});

test('remaining bytes over the measured per-locale rate, times the locales running at once', () => {
  // A finished locale did 4000 bytes in 4 s; the active one 1000 of 3000 in 1 s: 1 byte/ms per locale.
  const eta = estimateEtaMs([
    { state: 'completed', bytesDone: 4000, bytesTotal: 4000, elapsedMs: 4000 },
    { state: 'active', bytesDone: 1000, bytesTotal: 3000, elapsedMs: 1000 },
    { state: 'queued', bytesDone: 0, bytesTotal: 6000, elapsedMs: undefined },
  ]);
  // 2000 + 6000 bytes left at 1 byte/ms, one locale at a time.
  assert.equal(eta, 8000);
  const two = estimateEtaMs([
    { state: 'active', bytesDone: 1000, bytesTotal: 3000, elapsedMs: 1000 },
    { state: 'active', bytesDone: 1000, bytesTotal: 3000, elapsedMs: 1000 },
  ]);
  assert.equal(two, 2000);
});

test('a slow locale gives a long ETA (not a guess from how many locales are done)', () => {
  // 44 s for 6.5 MB measured on the first locale: the second, as big, is about 44 s away.
  const eta = estimateEtaMs([
    { state: 'completed', bytesDone: 6_500_000, bytesTotal: 6_500_000, elapsedMs: 44_000 },
    { state: 'queued', bytesDone: 0, bytesTotal: 6_500_000, elapsedMs: undefined },
  ]);
  assert.equal(eta, 44_000);
});

test('a stalled or retried locale starts over; failed ones are left out; an unknown size gives no ETA', () => {
  assert.equal(
    estimateEtaMs([
      { state: 'completed', bytesDone: 1000, bytesTotal: 1000, elapsedMs: 1000 },
      { state: 'stalled', bytesDone: 500, bytesTotal: 1000, elapsedMs: 9000 },
      { state: 'retrying', bytesDone: 0, bytesTotal: 1000, elapsedMs: undefined },
      { state: 'failed', bytesDone: 0, bytesTotal: 99_999, elapsedMs: undefined },
    ]),
    // The stalled locale's 500 bytes over 9 s count in the rate: 1500 bytes / 10 s.
    Math.round(2000 / (1500 / 10_000)),
  );
  assert.equal(
    estimateEtaMs([
      { state: 'completed', bytesDone: 1000, bytesTotal: 1000, elapsedMs: 1000 },
      { state: 'queued', bytesDone: 0, bytesTotal: undefined, elapsedMs: undefined },
    ]),
    null,
  );
});
