/**
 * Codec benchmark on real PE files (docs/BENCHMARKS.md "Codecs").
 *   npm run bench:codecs                      # representative set, see REP_FILES
 *   BENCH_RUNS=3 BENCH_ENCODE_RUNS=1 npm run bench:codecs
 *   BENCH_FILES=/path/a.dll,/path/b.exe npm run bench:codecs
 *   BENCH_CODECS=xz npm run bench:codecs      # only the xz rows (or bz2)
 *   BENCH_XZ_VARIANTS=1 npm run bench:codecs  # only the first N xz encoder rows (1 = preset 6)
 * MB/s = 10^6 bytes of uncompressed data per second, median of the runs; inputs are in memory.
 * Every output is checked: decoders against the original bytes, encoders through the xz/bzip2 CLIs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { peCorpus } from '../test/helpers/env.js';
import { compress, decompress, settingsKey, readSettings } from '../src/codecs/index.js';
import { decodeBz2, decodeBz2Streaming } from '../src/codecs/bz2.js';
import { decodeContext } from '../src/codecs/limits.js';
import { encodeXz } from '../src/codecs/xz.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const ENCODE_RUNS = Number(process.env.BENCH_ENCODE_RUNS ?? 1);
const CODECS = (process.env.BENCH_CODECS ?? 'bz2,xz').split(',');
/** A 6.6 MB PE32+ (wine), a 1.5 MB PE32 (mingw i686), plus every corpus file under 200 KB. */
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
const files = paths.map((p) => ({ name: basename(p), data: new Uint8Array(readFileSync(p)) }));
const total = files.reduce((n, f) => n + f.data.length, 0);
const small = files.filter((f) => f.data.length < SMALL_LIMIT);
console.log(
  `# ${files.length} files, ${(total / 1e6).toFixed(1)} MB (${small.length} under 200 KB); runs ${RUNS}, encode runs ${ENCODE_RUNS}`,
);
console.log(
  `# node ${process.version}, ${new Date().toISOString()}, load average ${loadavg()[0]!.toFixed(1)} on 2 cores`,
);
{
  // Which node-liblzma binary runs: a local node-gyp build (build/Release, loaded first) or its prebuild.
  const require = createRequire(import.meta.url);
  const main = require.resolve('node-liblzma');
  const dir = main.slice(0, main.lastIndexOf('node-liblzma') + 'node-liblzma'.length);
  const binary = existsSync(join(dir, 'build', 'Release')) ? 'local build/Release' : 'shipped prebuild';
  const lib = require('node-liblzma') as { versionString(): string };
  console.log(`# node-liblzma binary: ${binary}, liblzma ${lib.versionString()}`);
}

const cli = (cmd: string, args: string[], input: Uint8Array): Buffer =>
  execFileSync(cmd, args, { input, maxBuffer: 1 << 30 });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

interface Row {
  what: string;
  mbps: number;
  mbpsCpu: number;
  mbpsSmall: number;
  msPerSmall: number;
  ratio?: number;
  note: string;
}
const rows: Row[] = [];

/**
 * CPU seconds of this process, all threads (node-liblzma encodes on the libuv pool). On a busy shared
 * machine wall time depends on the load; CPU time much less, so both are reported.
 */
const cpuSeconds = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Times fn over every file (runs times), returns per-run seconds total and for the small set. */
async function timeIt(
  runs: number,
  inputs: Uint8Array[],
  fn: (input: Uint8Array, i: number) => Promise<Uint8Array>,
): Promise<{ all: number; small: number; cpu: number; outputs: Uint8Array[] }> {
  const alls: number[] = [];
  const cpus: number[] = [];
  const smalls: number[] = [];
  let outputs: Uint8Array[] = [];
  // Warm-up (module load, WASM instantiation) on the smallest input, not timed.
  let smallest = 0;
  inputs.forEach((x, i) => (x.length < inputs[smallest]!.length ? (smallest = i) : undefined));
  await fn(inputs[smallest]!, smallest);
  for (let r = 0; r < runs; r++) {
    outputs = [];
    let t = 0;
    let ts = 0;
    const cpu0 = cpuSeconds();
    for (let i = 0; i < inputs.length; i++) {
      const t0 = performance.now();
      outputs.push(await fn(inputs[i]!, i));
      const dt = (performance.now() - t0) / 1000;
      t += dt;
      if (files[i]!.data.length < SMALL_LIMIT) ts += dt;
    }
    alls.push(t);
    smalls.push(ts);
    cpus.push(cpuSeconds() - cpu0);
  }
  return { all: median(alls), small: median(smalls), cpu: median(cpus), outputs };
}

function record(
  what: string,
  t: { all: number; small: number; cpu: number },
  note: string,
  ratio?: number,
): void {
  const smallBytes = small.reduce((n, f) => n + f.data.length, 0);
  const row: Row = {
    what,
    mbps: total / 1e6 / t.all,
    mbpsCpu: total / 1e6 / t.cpu,
    mbpsSmall: smallBytes / 1e6 / t.small,
    msPerSmall: small.length ? (t.small * 1000) / small.length : 0,
    note,
  };
  if (ratio !== undefined) row.ratio = ratio;
  rows.push(row);
  row.note += `; load ${loadavg()[0]!.toFixed(1)}`;
  console.log(
    `| ${what} | ${row.mbps.toFixed(1)} | ${row.mbpsCpu.toFixed(2)} | ${row.mbpsSmall.toFixed(1)} | ${row.msPerSmall.toFixed(2)} | ${
      ratio === undefined ? '' : ratio.toFixed(4)
    } | ${row.note} |`,
  );
}

console.log(
  '| codec / library | MB/s all (wall) | MB/s per CPU-second | MB/s small | ms/small file | ratio | check |',
);
console.log('|---|---|---|---|---|---|---|');

// ---- bzip2 ----
if (CODECS.includes('bz2')) {
  const bz9 = files.map((f) => new Uint8Array(cli('bzip2', ['-9', '-c'], f.data)));
  const bzBytes = bz9.reduce((n, b) => n + b.length, 0);
  {
    const t = await timeIt(RUNS, bz9, (b) => decompress(b));
    const ok = t.outputs.every((o, i) => same(o, files[i]!.data));
    record(
      'bz2 decode: @foxglove/wasm-bz2 via decompress() (block by block, bounded)',
      t,
      ok ? 'all identical' : 'MISMATCH',
    );
  }
  {
    const t = await timeIt(RUNS, bz9, (b) => decodeBz2(b, decodeContext(b.length, {})));
    const ok = t.outputs.every((o, i) => same(o, files[i]!.data));
    record(
      'bz2 decode: @foxglove/wasm-bz2 whole-stream (guess 6×, grow 4×; the fallback path)',
      t,
      ok ? 'all identical' : 'MISMATCH',
    );
  }
  {
    const require = createRequire(import.meta.url);
    const Bzip2 = require('@foxglove/wasm-bz2') as {
      init(): Promise<{ decompress(s: Uint8Array, n: number): Uint8Array }>;
    };
    const b = await Bzip2.init();
    const t = await timeIt(RUNS, bz9, async (x, i) => b.decompress(x, files[i]!.data.length));
    const ok = t.outputs.every((o, i) => same(o, files[i]!.data));
    record('bz2 decode: @foxglove/wasm-bz2 alone, exact output size', t, ok ? 'all identical' : 'MISMATCH');
  }
  {
    const t = await timeIt(RUNS, bz9, (b) =>
      decodeBz2Streaming(b, decodeContext(b.length, { maxOutputSize: 1 << 30, maxRatio: Infinity })),
    );
    const ok = t.outputs.every((o, i) => same(o, files[i]!.data));
    record('bz2 decode: unbzip2-stream 1.4.3 (streaming fallback)', t, ok ? 'all identical' : 'MISMATCH');
  }
  {
    const t = await timeIt(
      ENCODE_RUNS,
      files.map((f) => f.data),
      (d) => compress(d, { codec: 'bz2', level: 9 }),
    );
    const identical = t.outputs.filter((o, i) => same(o, bz9[i]!)).length;
    const size = t.outputs.reduce((n, o) => n + o.length, 0);
    record(
      'bz2 encode -9: libbzip2-wasm 0.0.4',
      t,
      `${identical}/${files.length} byte-identical to bzip2 -9`,
      size / total,
    );
  }
  console.log(`# bzip2 -9 CLI ratio ${(bzBytes / total).toFixed(4)}`);
}

// ---- xz ----
if (CODECS.includes('xz')) {
  const xzRef = files.map(
    (f) => new Uint8Array(cli('xz', ['--x86', '--lzma2', '--check=crc64', '-c'], f.data)),
  );
  const xzRefBytes = xzRef.reduce((n, b) => n + b.length, 0);
  console.log(
    `# xz --x86 --lzma2 (preset 6) CLI ratio ${(xzRefBytes / total).toFixed(4)}; ${settingsKey(readSettings(xzRef[0]!))}`,
  );
  {
    const t = await timeIt(RUNS, xzRef, (b) => decompress(b));
    const ok = t.outputs.every((o, i) => same(o, files[i]!.data));
    record(
      'xz decode (+BCJ, 8 MiB): node-liblzma 4.0.2 via decompress()',
      t,
      ok ? 'all identical' : 'MISMATCH',
    );
  }
  {
    const require = createRequire(import.meta.url);
    const ln = require('lzma-native') as { decompress(b: Buffer): Promise<Buffer> };
    const t = await timeIt(RUNS, xzRef, async (b) => new Uint8Array(await ln.decompress(Buffer.from(b))));
    const ok = t.outputs.every((o, i) => same(o, files[i]!.data));
    record('xz decode (+BCJ, 8 MiB): lzma-native 8.0.6 decompress()', t, ok ? 'all identical' : 'MISMATCH');
  }

  const MiB = 1024 * 1024;
  const xzVariants: {
    what: string;
    dictSize: number;
    x86: boolean;
    extreme: boolean;
    compareCli?: string[];
  }[] = [
    {
      what: 'preset 6 (= xz --x86 --lzma2)',
      dictSize: 8 * MiB,
      x86: true,
      extreme: false,
      compareCli: ['--x86', '--lzma2'],
    },
    {
      what: 'preset 6e',
      dictSize: 8 * MiB,
      x86: true,
      extreme: true,
      compareCli: ['--x86', '--lzma2=preset=6e'],
    },
    { what: 'preset 6, no BCJ', dictSize: 8 * MiB, x86: false, extreme: false },
    { what: 'preset 7e (Mozilla XZ_OPT=-7e, 16 MiB)', dictSize: 16 * MiB, x86: true, extreme: true },
    {
      what: 'lzma-native fallback, 12 MiB dict, preset-6 params',
      dictSize: 12 * MiB,
      x86: true,
      extreme: false,
    },
  ];
  for (const v of xzVariants.slice(0, Number(process.env.BENCH_XZ_VARIANTS ?? xzVariants.length))) {
    const s = { codec: 'xz' as const, dictSize: v.dictSize, x86: v.x86, check: 'crc64' as const };
    const t = await timeIt(
      ENCODE_RUNS,
      files.map((f) => f.data),
      (d) => encodeXz(d, s, { extreme: v.extreme }),
    );
    const size = t.outputs.reduce((n, o) => n + o.length, 0);
    const roundTrip = t.outputs.every((o, i) => same(cli('xz', ['-dc'], o), files[i]!.data));
    const keys = new Set(t.outputs.map((o) => settingsKey(readSettings(o))));
    let identical = '';
    if (v.compareCli) {
      const n = t.outputs.filter((o, i) =>
        same(o, cli('xz', [...v.compareCli!, '--check=crc64', '-c'], files[i]!.data)),
      ).length;
      identical = `, ${n}/${files.length} identical to xz ${v.compareCli.join(' ')}`;
    }
    record(
      `xz encode ${v.what}`,
      t,
      `xz -dc ${roundTrip ? 'ok' : 'FAILED'}; ${[...keys].join(' ')}${identical}`,
      size / total,
    );
  }
}
