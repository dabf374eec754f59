/**
 * Deflate benchmark for zip entries (docs/BENCHMARKS.md "Deflate"): src/codecs/deflate.ts at levels
 * 1, 6 and 9 on real PE files, and inflate of each level's output.
 *   node --import tsx bench/deflate.ts                      # the bench:codecs file set
 *   BENCH_RUNS=3 BENCH_FILES=a.dll,b.exe node --import tsx bench/deflate.ts
 * MB = 10^6 uncompressed bytes. "per CPU-second" divides by the process's CPU time (all threads: zlib
 * runs on the libuv pool), which survives load on a shared machine far better than wall time.
 * Every output is checked: deflate output through Python's zlib (an independent inflater), inflate output
 * against the original bytes.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { deflateRaw, inflateRaw } from '../src/codecs/deflate.js';
import { peCorpus } from '../test/helpers/env.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const REP_FILES = ['wine64/kernelbase.dll', 'mingw-i686/libgomp-1.dll'];
const SMALL_LIMIT = 200 * 1024;

const corpus = peCorpus();
if (typeof corpus === 'string') {
  console.error(corpus);
  process.exit(1);
}
const root = join(corpus[0]!, '..', '..');
const paths = process.env.BENCH_FILES
  ? process.env.BENCH_FILES.split(',')
  : [...REP_FILES.map((f) => join(root, f)), ...corpus.filter((f) => readFileSync(f).length < SMALL_LIMIT)];
const files = paths.map((p) => new Uint8Array(readFileSync(p)));
const total = files.reduce((n, f) => n + f.length, 0);
console.log(
  `# ${files.length} files, ${(total / 1e6).toFixed(1)} MB; runs ${RUNS}; node ${process.version}, zlib ${process.versions.zlib}`,
);
console.log(
  `# ${new Date().toISOString()}, load average ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')}`,
);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function measure(
  inputs: Uint8Array[],
  fn: (b: Uint8Array) => Promise<Uint8Array>,
): Promise<{ wall: number; cpu: number; outputs: Uint8Array[] }> {
  await fn(inputs[inputs.length - 1]!); // warm-up
  const walls: number[] = [];
  const cpus: number[] = [];
  let outputs: Uint8Array[] = [];
  for (let r = 0; r < RUNS; r++) {
    outputs = [];
    const t0 = performance.now();
    const c0 = cpu();
    for (const b of inputs) outputs.push(await fn(b));
    walls.push((performance.now() - t0) / 1000);
    cpus.push(cpu() - c0);
  }
  return { wall: median(walls), cpu: median(cpus), outputs };
}

console.log('| operation | MB/s (wall) | MB per CPU-second | ratio | check | load |');
console.log('|---|---:|---:|---:|---|---|');
for (const level of [1, 6, 9]) {
  const d = await measure(files, (b) => deflateRaw(b, level));
  const size = d.outputs.reduce((n, o) => n + o.length, 0);
  const pyOk = d.outputs.every(
    (o, i) =>
      Buffer.compare(
        execFileSync(
          'python3',
          ['-c', 'import sys,zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read(), -15))'],
          {
            input: o,
            maxBuffer: 1 << 30,
          },
        ),
        files[i]!,
      ) === 0,
  );
  const load = loadavg()[0]!.toFixed(1);
  console.log(
    `| deflate level ${level} | ${(total / 1e6 / d.wall).toFixed(1)} | ${(total / 1e6 / d.cpu).toFixed(1)} | ${(size / total).toFixed(4)} | Python zlib inflates ${pyOk ? 'all' : 'NOT all'} | ${load} |`,
  );
  const i = await measure(d.outputs, (b) => inflateRaw(b));
  const ok = i.outputs.every((o, k) => Buffer.compare(o, files[k]!) === 0);
  console.log(
    `| inflate (level-${level} input) | ${(total / 1e6 / i.wall).toFixed(1)} | ${(total / 1e6 / i.cpu).toFixed(1)} | | ${ok ? 'identical' : 'MISMATCH'} | ${loadavg()[0]!.toFixed(1)} |`,
  );
}
