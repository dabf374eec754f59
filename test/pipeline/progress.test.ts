import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { Pipeline } from '../../src/pipeline/index.js';
import type { LocaleProgress } from '../../src/pipeline/types.js';
import { WorkMeter } from '../../src/pipeline/work.js';
import { tempDir } from '../helpers/env.js';
import { buildMar, CONFIG_PATH, newCache, readAll, XZ_BCJ } from './_support.js';

let pipeline: Pipeline;
const dir = tempDir();
before(async () => {
  const config = await loadConfig(CONFIG_PATH);
  pipeline = await Pipeline.create({ config, threads: 1, cache: newCache(join(dir, 'cache')) });
});
after(() => pipeline.close());

test('one big xz entry: progress moves while it is decoded and recompressed, before it completes', async () => {
  // A 4 MiB PE of random bytes: xz takes it in ~1 MiB at a time for seconds, well past the 100 ms throttle.
  const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'big', payload: randomBytes(4 * 1024 * 1024) });
  const input = join(dir, 'big.mar');
  await buildMar(input, [{ name: 'big.exe', data: pe, codec: XZ_BCJ }]);
  const stored = (await readAll(input)).raw.get('big.exe')!.length;
  const events: LocaleProgress[] = [];
  const m = await pipeline.signLocale({
    profile: 'dev',
    input,
    output: join(dir, 'big.signed.mar'),
    onProgress: (p) => events.push(p),
  });
  assert.equal(m.totals.signed, 1);
  const within = events.filter((e) => e.entriesDone === 0 && e.stage === 'signing');
  const partial = within.filter((e) => e.workBytesDone > 0 && e.workBytesDone < stored);
  assert.ok(
    partial.length >= 2,
    `progress within the entry: ${JSON.stringify(within.map((e) => e.workBytesDone))} of ${stored}`,
  );
  const seen = partial.map((e) => e.workBytesDone);
  assert.deepEqual(
    seen,
    [...seen].sort((a, b) => a - b),
    'work within an entry only goes forward',
  );
  assert.equal(events.at(-1)!.entriesDone, 1);
  assert.equal(events.at(-1)!.bytesDone, stored);
  // Stages in order: planning → signing → writing → done.
  const stages = events.map((e) => e.stage).filter((s, i, a) => s !== a[i - 1]);
  assert.deepEqual(stages, ['planning', 'signing', 'writing', 'done']);
});

test('WorkMeter: in-flight bytes per owner, forward only, gone when the task ends', () => {
  const w = new WorkMeter();
  let told = 0;
  const stop = w.watch('a', () => told++);
  const t1 = w.begin('a');
  const t2 = w.begin('b');
  w.update(t1, 1000, 1, 4);
  w.update(t2, 1000, 2, 2);
  assert.equal(w.inFlight('a'), 250);
  assert.equal(w.inFlight('b'), 1000);
  w.update(t1, 1000, 0, 4); // stale (out-of-order) report: ignored
  assert.equal(w.inFlight('a'), 250);
  w.end(t1);
  assert.equal(w.inFlight('a'), 0);
  assert.equal(told, 2, 'the watcher heard its own owner only');
  stop();
  w.update(w.begin('a'), 10, 1, 1);
  assert.equal(told, 2);
});
