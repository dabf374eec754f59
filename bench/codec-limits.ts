/**
 * Codec limits (docs/BENCHMARKS.md "Codec bombs"):
 * 1. the compression ratio (decoded / stored bytes) of every PE of the corpus with `bzip2 -9` and
 *    `xz --x86 --lzma2`, and of every entry of the peer Firefox MARs — what DEFAULT_MAX_RATIO must allow;
 * 2. what the issue's bombs cost now: wall, CPU and the decoders' work counter (`stats.decodedBytes`).
 *   npm run bench:codec-limits
 * Resident memory is measured from outside, on the CLI (`/usr/bin/time -v`, commands in the docs).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  decodeForSigning,
  decompress,
  DEFAULT_MAX_RATIO,
  detectCodec,
  RATIO_FREE_BYTES,
} from '../src/codecs/index.js';
import { buildPe } from '../src/formats/pe/synth.js';
import { bz2WithZeros, marEntries, xzZeros } from '../test/codecs/helpers.js';
import { PEER_MAR_DIR, peCorpus } from '../test/helpers/env.js';

const corpus = peCorpus();
if (typeof corpus === 'string') {
  console.error(corpus);
  process.exit(1);
}
const cli = (cmd: string, args: string[], input: Uint8Array): Buffer =>
  execFileSync(cmd, args, { input, maxBuffer: 1 << 30 });
console.log(
  `# node ${process.version}, ${new Date().toISOString()}, load average ${loadavg()[0]!.toFixed(1)}`,
);

// ---- 1. ratios of real files ----
const root = join(corpus[0]!, '..', '..');
const rows: { name: string; size: number; bz2: number; xz: number }[] = [];
for (const p of corpus) {
  const data = readFileSync(p);
  rows.push({
    name: relative(root, p),
    size: data.length,
    bz2: data.length / cli('bzip2', ['-9', '-c'], data).length,
    xz: data.length / cli('xz', ['--x86', '--lzma2', '--check=crc64', '-c'], data).length,
  });
}
for (const codec of ['bz2', 'xz'] as const) {
  const worst = [...rows].sort((a, b) => b[codec] - a[codec]).slice(0, 3);
  console.log(
    `PE corpus (${rows.length} files), ${codec}: worst ratios ${worst.map((r) => `${r[codec].toFixed(1)} (${r.name}, ${r.size} B)`).join(', ')}`,
  );
}
const peer = ['firefox-updater/complete.mar', 'firefox-updater/partial.mar', 'build-mar/test-bz2.mar'];
for (const mar of peer) {
  let worst = { ratio: 0, name: '', size: 0 };
  for (const e of marEntries(join(PEER_MAR_DIR, mar))) {
    if (detectCodec(e.bytes) === 'none') continue;
    const size = (await decompress(e.bytes, { maxRatio: Infinity })).length;
    if (size / e.bytes.length > worst.ratio) worst = { ratio: size / e.bytes.length, name: e.name, size };
  }
  console.log(`peer ${mar}: worst ratio ${worst.ratio.toFixed(1)} (${worst.name}, ${worst.size} B decoded)`);
}
console.log(`# limit: DEFAULT_MAX_RATIO ${DEFAULT_MAX_RATIO}, outputs ≤ ${RATIO_FREE_BYTES} B exempt`);

// ---- 2. the bombs ----
const cpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
async function bomb(
  what: string,
  stored: Uint8Array,
  decode: (stats: { decodedBytes: number }) => Promise<unknown>,
) {
  const stats = { decodedBytes: 0 };
  const t0 = performance.now();
  const c0 = cpu();
  let outcome = 'decoded';
  try {
    await decode(stats);
  } catch (e) {
    outcome = (e as { code?: string }).code ?? String(e);
  }
  console.log(
    `| ${what} | ${stored.length} | ${outcome} | ${((performance.now() - t0) / 1000).toFixed(2)} | ${(cpu() - c0).toFixed(2)} | ${(stats.decodedBytes / 2 ** 20).toFixed(1)} | load ${loadavg()[0]!.toFixed(1)} |`,
  );
}
const GiB = 2 ** 30;
const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'bomb' });
const zerosBz2 = bz2WithZeros(1.06 * GiB);
const peZerosBz2 = bz2WithZeros(GiB, cli('bzip2', ['-9', '-c'], pe));
const zerosXz = xzZeros(GiB);
console.log('| bomb | stored B | result | wall s | CPU s | decoded MiB (work counter) | |');
console.log('|---|---:|---|---:|---:|---:|---|');
await bomb('bz2, 1.06 GiB of zeros: decompress() (mar extract)', zerosBz2, (stats) =>
  decompress(zerosBz2, { stats }),
);
await bomb('same, signing (decodeForSigning)', zerosBz2, (stats) =>
  decodeForSigning(zerosBz2, { name: 'a.exe', stats }),
);
await bomb('same, signing, ratio limit off (PE check alone)', zerosBz2, (stats) =>
  decodeForSigning(zerosBz2, { name: 'a.exe', stats, maxRatio: Infinity }),
);
await bomb('bz2, PE + 1 GiB of zeros, signing', peZerosBz2, (stats) =>
  decodeForSigning(peZerosBz2, { name: 'a.exe', stats }),
);
await bomb('xz, 1 GiB of zeros: decompress()', zerosXz, (stats) => decompress(zerosXz, { stats }));
await bomb('xz, same, signing, ratio limit off (PE check alone)', zerosXz, (stats) =>
  decodeForSigning(zerosXz, { name: 'a.exe', stats, maxRatio: Infinity }),
);
