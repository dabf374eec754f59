import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  formatDuration,
  LiveLines,
  localeProgress,
  MIN_MEASURE_MS,
  releaseProgress,
  Throughput,
  type ProgressStream,
} from '../../src/cli/progress.js';
import type { ReleaseProgress } from '../../src/pipeline/release.js';
import type { LocaleProgress } from '../../src/pipeline/types.js';

const MiB = 1024 * 1024;

/** A terminal stand-in: records every write, reports a width. */
class FakeTty implements ProgressStream {
  isTTY = true;
  columns = 200;
  writes: string[] = [];
  write(s: string): boolean {
    this.writes.push(s);
    return true;
  }
  /** The lines of the last redraw (escape codes removed). */
  get screen(): string[] {
    const last = this.writes.at(-1) ?? '';
    const [head = '', ...rest] = last.split(String.fromCharCode(27));
    const text = head + rest.map((p) => p.replace(/^\[\d*[A-Za-z]/, '')).join('');
    return text.split('\n').filter(Boolean);
  }
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const locale = (over: Partial<LocaleProgress>): LocaleProgress => ({
  stage: 'signing',
  entriesDone: 0,
  entriesTotal: 10,
  bytesDone: 0,
  bytesTotal: 10 * MiB,
  workBytesDone: 0,
  hits: 0,
  misses: 0,
  passthrough: 0,
  ...over,
});

describe('progress renderer', () => {
  test('sign-locale line: stage, bytes within an entry, and an ETA only once progress was measured', () => {
    const tty = new FakeTty();
    const c = clock();
    const d = localeProgress(true, 'de.mar', { stream: tty, now: c.now });
    d.update(locale({ stage: 'planning', entriesTotal: 0, bytesTotal: 0 }));
    assert.match(tty.screen[0]!, /de\.mar planning/);
    c.advance(250);
    d.update(locale({}));
    assert.doesNotMatch(tty.screen[0]!, /ETA/, 'no ETA before any measurement');
    c.advance(250);
    // Half of one big entry worked through by a pool thread: bytes move before any entry is done.
    d.update(locale({ workBytesDone: 1 * MiB }));
    assert.match(tty.screen[0]!, /1\.0 MiB\/10 MiB/);
    assert.match(tty.screen[0]!, /0\/10 entries,/);
    assert.doesNotMatch(tty.screen[0]!, /ETA/, `no ETA before ${MIN_MEASURE_MS} ms of measured work`);
    c.advance(MIN_MEASURE_MS);
    d.update(locale({ entriesDone: 2, bytesDone: 2 * MiB, workBytesDone: 1 * MiB, misses: 1, hits: 1 }));
    const line = tty.screen[0]!;
    // 3 MiB in 1.25 s since signing started → 2.4 MiB/s, 7 MiB left → 0:03.
    assert.match(line, /3\.0 MiB\/10 MiB · 2\.4 MiB\/s · ETA 0:03/);
    assert.match(line, /hits 1 signed 1/);
    // A task that ended before its entry was assembled: the shown bytes never go back.
    c.advance(250);
    d.update(locale({ entriesDone: 2, bytesDone: 2 * MiB, workBytesDone: 0, misses: 1, hits: 1 }));
    assert.match(tty.screen[0]!, /3\.0 MiB\/10 MiB/);
    c.advance(250);
    d.update(locale({ stage: 'writing', entriesDone: 10, bytesDone: 10 * MiB }));
    assert.match(tty.screen[0]!, /writing/);
    d.stop();
    assert.equal(tty.writes.at(-1), '\x1b[1A\x1b[0J', 'stop clears the line it drew');
  });

  test('sign-release: one line per running locale (locale, stage, bytes, hits), overall line with an ETA from measured throughput', () => {
    const tty = new FakeTty();
    const c = clock();
    const d = releaseProgress(true, 3, { stream: tty, now: c.now });
    const base: ReleaseProgress = {
      localesDone: 0,
      localesTotal: 3,
      current: {},
      entriesDone: 0,
      entriesTotal: 0,
      bytesDone: 0,
      hits: 0,
      misses: 0,
      inputBytesTotal: 30 * MiB,
      inputBytesDone: 0,
    };
    d.update(base);
    assert.equal(tty.screen.length, 1);
    assert.match(tty.screen[0]!, /release 0\/3 locales · 0 B\/30 MiB/);
    c.advance(300);
    d.update({
      ...base,
      current: {
        de: locale({ workBytesDone: 2 * MiB, hits: 1, misses: 2 }),
        'en-US': locale({ stage: 'planning', entriesTotal: 0, bytesTotal: 0 }),
      },
    });
    assert.equal(tty.screen.length, 3);
    assert.match(tty.screen[1]!, /de +signing +2\.0 MiB\/10 MiB · 0\/10 entries · hits 1 signed 2/);
    assert.match(tty.screen[2]!, /en-US +planning/);
    assert.doesNotMatch(tty.screen[0]!, /ETA/, 'no ETA before a measurement');
    c.advance(1700);
    d.update({
      ...base,
      localesDone: 1,
      inputBytesDone: 10 * MiB,
      current: { 'en-US': locale({ bytesDone: 2 * MiB, hits: 3 }) },
    });
    // 12 MiB of 30 in 2 s → 6.0 MiB/s, 18 MiB left → 0:03; the finished locale's line is gone.
    assert.match(tty.screen[0]!, /release 1\/3 locales · 12 MiB\/30 MiB · 6\.0 MiB\/s · ETA 0:03/);
    assert.equal(tty.screen.length, 2);
    assert.match(tty.screen[1]!, /en-US +signing +2\.0 MiB/);
    // The redraw moved the cursor up over the 3 lines drawn before and cleared them.
    assert.ok(tty.writes.at(-1)!.startsWith('\x1b[3A\x1b[0J'));
    d.stop();
  });

  test('redraws at most once per interval; the latest state is drawn when it has passed', async () => {
    const tty = new FakeTty();
    const c = clock();
    const live = new LiveLines(tty, { now: c.now, intervalMs: 30 });
    live.set(() => ['a']);
    live.set(() => ['b']);
    live.set(() => ['c']);
    assert.equal(tty.writes.length, 1);
    c.advance(30);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(tty.writes.length, 2);
    assert.deepEqual(tty.screen, ['c']);
    live.stop();
  });

  test('off: nothing written (non-TTY or --json decide `enabled`)', () => {
    const tty = new FakeTty();
    const d = localeProgress(false, 'x', { stream: tty });
    d.update(locale({}));
    d.stop();
    assert.equal(tty.writes.length, 0);
  });

  test('Throughput: no rate before a measurement; then bytes over measured time', () => {
    const t = new Throughput();
    assert.equal(t.rate(), undefined);
    t.sample(0, 0);
    t.sample(MIN_MEASURE_MS - 1, 100);
    assert.equal(t.rate(), undefined);
    t.sample(2000, 4000);
    assert.equal(t.rate(), 2000);
    assert.equal(t.eta(10_000), 3);
    assert.equal(formatDuration(3725), '1:02:05');
  });
});
