import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { decompress, readSettings, settingsKey } from '../../src/codecs/index.js';
import { run } from './helpers.js';

const MiB = 1024 * 1024;

test('the codec libraries load and work in 2 worker threads at once (and on the main thread)', async () => {
  const data = Buffer.from('MZ'.padEnd(300_000, 'worker thread codec check '));
  const entries = [
    run('bzip2', ['-9', '-c'], data),
    run('xz', ['--x86', '--lzma2', '--check=crc64', '-c'], data),
    run('xz', ['--lzma2=preset=6,dict=12MiB', '--check=crc32', '-c'], data), // lzma-native encoder path
  ].map((b) => new Uint8Array(b));
  const runWorker = (): Promise<{ data: Uint8Array; again: Uint8Array }[]> =>
    new Promise((resolve, reject) => {
      // Node 20 cannot start a .ts worker entry through --import tsx, so a tiny eval'd bootstrap registers tsx first.
      const tsxApi = import.meta.resolve('tsx/esm/api');
      const entry = new URL('./fixtures/codec-worker.ts', import.meta.url).href;
      const boot = `import(${JSON.stringify(tsxApi)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
      const w = new Worker(boot, { eval: true, workerData: { entries } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)));
    });
  const [a, b, main] = await Promise.all([
    runWorker(),
    runWorker(),
    Promise.all(entries.map((e) => decompress(e))),
  ]);
  for (const results of [a, b]) {
    assert.equal(results.length, entries.length);
    results.forEach((r, i) => {
      assert.deepEqual(Buffer.from(r.data), data);
      assert.equal(settingsKey(readSettings(r.again)), settingsKey(readSettings(entries[i]!)));
      const cli = i === 0 ? 'bzip2' : 'xz';
      assert.deepEqual(run(cli, ['-dc'], r.again), data);
    });
  }
  for (const d of main) assert.deepEqual(Buffer.from(d), data);
  assert.equal(settingsKey(readSettings(a[2]!.again)), `xz:dict=${12 * MiB}:nox86:crc32`);
});
