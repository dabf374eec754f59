/**
 * PKCS#11 (SoftHSM2) against node:crypto keys:
 *  1. signatures per second and per CPU-second, one thread, RSA-2048 and RSA-4096 (the dev keys);
 *  2. the session model: 2 worker threads each on its own token session vs 2 threads relaying digests
 *     to one signer on the main thread (what docs/ARCHITECTURE.md "Keys" chose, and why);
 *  3. a cold `sign-release` of the benchmark release (bench/lib/release-gen.ts) with token keys vs file
 *     keys, alternated, median of --runs.
 *
 *   npm run bench:pkcs11 [-- --n 300 --runs 3 --codec bz2 --locales 20 --mb-per-locale 80 --skip-release --json]
 *
 * Needs softhsm2 + opensc (apt) and the pkcs11js binding. Keys and the token come from the product's own
 * `marsign keys dev --pkcs11` code (generateDevKeys + setupDevToken). The machine is shared: every figure
 * carries the load average, and per-CPU-second rates are given where they survive load.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MessageChannel, Worker } from 'node:worker_threads';
import { loadConfig, loadProfile } from '../src/config/index.js';
import { setupDevToken } from '../src/keys/dev-token.js';
import { generateDevKeys } from '../src/keys/dev.js';
import type { SigningKey } from '../src/keys/types.js';
import { PROJECT_ROOT } from '../src/version.js';
import { generateRelease, type BenchCodec } from './lib/release-gen.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '300' },
    runs: { type: 'string', default: '3' },
    codec: { type: 'string', default: 'bz2' },
    locales: { type: 'string', default: '20' },
    'mb-per-locale': { type: 'string', default: '80' },
    'skip-release': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const N = Math.max(10, Number(values.n));
const RUNS = Math.max(1, Number(values.runs));
const log = (m: string): void => void process.stderr.write(`[bench:pkcs11] ${m}\n`);
const load1 = (): number => Number((loadavg()[0] ?? NaN).toFixed(1));
const cpuS = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Rate {
  key: string;
  backend: string;
  signatures: number;
  wallS: number;
  perS: number;
  perCpuS: number;
  load1: number;
}

async function rate(
  name: string,
  backend: string,
  key: SigningKey,
  hash: 'sha256' | 'sha384',
): Promise<Rate> {
  const digests = Array.from({ length: N }, (_, i) => createHash(hash).update(`m${i}`).digest());
  await key.signDigest(hash, digests[0]!); // warm-up (session, login)
  const l = load1();
  const c0 = cpuS();
  const t0 = performance.now();
  for (const d of digests) await key.signDigest(hash, d);
  const wallS = (performance.now() - t0) / 1000;
  const cpu = cpuS() - c0;
  return { key: name, backend, signatures: N, wallS, perS: N / wallS, perCpuS: N / cpu, load1: l };
}

interface SessionModel {
  mode: string;
  threads: number;
  signatures: number;
  wallS: number;
  perS: number;
  cpuS: number;
  perCpuS: number;
  load1: number;
}

async function sessionModel(
  mode: 'session' | 'relay',
  configPath: string,
  key: SigningKey,
): Promise<SessionModel> {
  const threads = 2;
  const workers: Worker[] = [];
  for (let i = 0; i < threads; i++) {
    const { port1, port2 } = new MessageChannel();
    if (mode === 'relay') {
      // The main-thread signing service: one session, requests served in arrival order.
      port1.on('message', (m: { id: number; digest: Uint8Array }) => {
        void key.signDigest('sha256', m.digest).then((sig) => port1.postMessage({ id: m.id, sig }));
      });
    }
    const w = new Worker(new URL('./lib/pkcs11-thread.mjs', import.meta.url), {
      workerData: { mode, configPath, profile: 'dev', n: N, port: port2 },
      transferList: [port2],
    });
    await new Promise((r) => w.once('message', r)); // ready: profile loaded / channel set
    workers.push(w);
    if (mode === 'session') port1.close();
  }
  const l = load1();
  const c0 = cpuS();
  const t0 = performance.now();
  const done = workers.map((w) => new Promise((r) => w.once('message', r)));
  for (const w of workers) w.postMessage('go');
  await Promise.all(done);
  const wallS = (performance.now() - t0) / 1000;
  const cpu = cpuS() - c0;
  await Promise.all(workers.map((w) => w.terminate()));
  const total = N * threads;
  return {
    mode: mode === 'session' ? 'session per thread' : 'main-thread signer (threads relay digests)',
    threads,
    signatures: total,
    wallS,
    perS: total / wallS,
    cpuS: cpu,
    perCpuS: total / cpu,
    load1: l,
  };
}

interface ReleaseRun {
  keys: 'file' | 'pkcs11';
  wallS: number;
  cpuS: number;
  signOperations: number;
  load1: number;
}

/** Cold sign-release in a child process (fresh cache), timed spawn to exit, CPU from /usr/bin/time. */
async function signRelease(
  releaseJson: string,
  configPath: string,
  profile: string,
  work: string,
  tag: string,
  env: NodeJS.ProcessEnv,
): Promise<Omit<ReleaseRun, 'keys'>> {
  const out = join(work, `out-${tag}`);
  const timeFile = join(work, `time-${tag}.txt`);
  const args = [
    '-f',
    '%e %U %S',
    '-o',
    timeFile,
    process.execPath,
    '--import',
    'tsx',
    join(PROJECT_ROOT, 'src/cli/main.ts'),
  ];
  args.push('sign-release', releaseJson, '-o', out, '--profile', profile, '--config', configPath, '--json');
  const l = load1();
  const t0 = performance.now();
  const code = await new Promise<number>((res, rej) => {
    const c = spawn('/usr/bin/time', args, {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...env, MARSIGN_CACHE_DIR: join(work, `cache-${tag}`) },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    c.on('error', rej);
    c.on('close', (x) => res(x ?? -1));
  });
  const wallS = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`sign-release (${tag}) exited ${code}`);
  const [, u, s] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
  const m = JSON.parse(readFileSync(join(out, 'release-manifest.json'), 'utf8')) as {
    totals: { signOperations: number; failed: number };
  };
  if (m.totals.failed) throw new Error(`sign-release (${tag}): ${m.totals.failed} locales failed`);
  rmSync(out, { recursive: true, force: true });
  rmSync(join(work, `cache-${tag}`), { recursive: true, force: true });
  return { wallS, cpuS: (u ?? NaN) + (s ?? NaN), signOperations: m.totals.signOperations, load1: l };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'marsign-bench-p11-'));
  const loadBefore = loadavg();
  try {
    log('generating TEST-ONLY keys and a SoftHSM2 token (marsign keys dev --pkcs11 code)');
    const dev = await generateDevKeys(join(work, 'keys'), { marKeyBits: 4096 });
    const tok = await setupDevToken(dev);
    const pin = readFileSync(tok.pinFile, 'utf8').trim();
    process.env.SOFTHSM2_CONF = tok.softhsmConf;
    process.env[tok.pinEnv] = pin;
    const config = await loadConfig(dev.config);
    const token = await loadProfile(config, 'dev');
    const files = await loadProfile(config, 'dev-files');

    log(`signatures/s, ${N} each`);
    const rates = [
      await rate('RSA-2048 (Authenticode)', 'node:crypto', files.authenticode!.key, 'sha256'),
      await rate('RSA-2048 (Authenticode)', 'SoftHSM2 C_Sign', token.authenticode!.key, 'sha256'),
      await rate('RSA-4096 (MAR)', 'node:crypto', files.mar!.keys[0]!, 'sha384'),
      await rate('RSA-4096 (MAR)', 'SoftHSM2 C_Sign', token.mar!.keys[0]!, 'sha384'),
    ];
    log('session model, 2 threads');
    const models: SessionModel[] = [];
    for (let i = 0; i < RUNS; i++)
      for (const mode of ['session', 'relay'] as const)
        models.push(await sessionModel(mode, dev.config, token.authenticode!.key));

    let release: { codec: string; locales: number; mbPerLocale: number; runs: ReleaseRun[] } | undefined;
    if (!values['skip-release']) {
      const codec = values.codec as BenchCodec;
      const locales = Number(values.locales);
      const mbPerLocale = Number(values['mb-per-locale']);
      const rel = await generateRelease({ codec, locales, mbPerLocale, log });
      release = { codec, locales, mbPerLocale, runs: [] };
      const env = { SOFTHSM2_CONF: tok.softhsmConf, [tok.pinEnv]: pin };
      for (let i = 0; i < RUNS; i++) {
        for (const [keys, profile] of (i % 2
          ? [
              ['pkcs11', 'dev'],
              ['file', 'dev-files'],
            ]
          : [
              ['file', 'dev-files'],
              ['pkcs11', 'dev'],
            ]) as [ReleaseRun['keys'], string][]) {
          log(`cold sign-release, ${keys} keys, run ${i + 1}/${RUNS}`);
          release.runs.push({
            keys,
            ...(await signRelease(rel.releaseJson, dev.config, profile, work, `${keys}-${i}`, env)),
          });
        }
      }
    }
    const res = {
      command: `npm run bench:pkcs11 -- ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model.trim(), node: process.version },
      loadBefore,
      loadAfter: loadavg(),
      rates,
      models,
      release,
    };
    if (values.json) process.stdout.write(JSON.stringify(res, null, 2) + '\n');
    else process.stdout.write(markdown(res) + '\n');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function markdown(r: {
  command: string;
  loadBefore: number[];
  loadAfter: number[];
  rates: Rate[];
  models: SessionModel[];
  release?: { codec: string; locales: number; mbPerLocale: number; runs: ReleaseRun[] } | undefined;
}): string {
  const f = (x: number, d = 1): string => x.toFixed(d);
  const lines = [
    `Command: \`${r.command}\`; load average before ${r.loadBefore.map((x) => f(x, 2)).join(' ')}, after ${r.loadAfter.map((x) => f(x, 2)).join(' ')}.`,
    '',
    '| key | backend | signatures/s | signatures per CPU-s | load (1 min) |',
    '|---|---|---|---|---|',
    ...r.rates.map((x) => `| ${x.key} | ${x.backend} | ${f(x.perS)} | ${f(x.perCpuS)} | ${f(x.load1)} |`),
    '',
    '| session model (RSA-2048, SoftHSM2) | threads | signatures | wall s | signatures/s | signatures per CPU-s | load |',
    '|---|---|---|---|---|---|---|',
    ...r.models.map(
      (m) =>
        `| ${m.mode} | ${m.threads} | ${m.signatures} | ${f(m.wallS, 2)} | ${f(m.perS)} | ${f(m.perCpuS)} | ${f(m.load1)} |`,
    ),
  ];
  if (r.release) {
    const by = (k: string) => r.release!.runs.filter((x) => x.keys === k);
    const [fw, tw] = [median(by('file').map((x) => x.wallS)), median(by('pkcs11').map((x) => x.wallS))];
    const [fc, tc] = [median(by('file').map((x) => x.cpuS)), median(by('pkcs11').map((x) => x.cpuS))];
    lines.push(
      '',
      `Cold \`sign-release\` of the benchmark release (${r.release.codec}, ${r.release.locales} locales × ${r.release.mbPerLocale} MB), fresh cache each run, file and token runs alternated:`,
      '',
      '| keys | run | wall s | CPU s | sign operations | load (1 min) |',
      '|---|---|---|---|---|---|',
      ...r.release.runs.map(
        (x, i) =>
          `| ${x.keys} | ${Math.floor(i / 2) + 1} | ${f(x.wallS, 2)} | ${f(x.cpuS, 2)} | ${x.signOperations} | ${f(x.load1)} |`,
      ),
      '',
      `Median: file ${f(fw, 2)} s wall / ${f(fc, 2)} CPU-s, token ${f(tw, 2)} s wall / ${f(tc, 2)} CPU-s: token ÷ file = ${f(tw / fw, 3)} (wall), ${f(tc / fc, 3)} (CPU).`,
    );
  }
  return lines.join('\n');
}

if (!existsSync('/usr/bin/time')) throw new Error('bench:pkcs11 needs /usr/bin/time (apt-get install time)');
await main();
