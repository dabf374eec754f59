/**
 * Service benchmark (`npm run bench:service`): the synthetic release (bench/lib/release-gen.ts, real PE
 * corpus) signed through the queue by 1 and by 2 `marsign worker` processes, next to the embedded
 * pipeline (`signRelease` in-process, what `marsign sign-release` runs), each cold (fresh cache) and
 * warm (same cache, new release id). The queue overhead per locale is (service − embedded) / locales.
 *
 * Timing: embedded = `signRelease` in this process, its pool created and every thread warmed (keys
 * loaded, one canary each) beforehand, as a started worker is. Service = from `submit` to the
 * release's parent job completing (polled every 50 ms), workers started and ready beforehand (process
 * start-up is not part of a release). Machine cores are shared fairly: embedded and 1 worker use
 * `--threads <cores>`; 2 workers use `--threads <cores/2>` each.
 *
 * Options: --locales N (6) --mb-per-locale MB (8) --codec bz2|xz (bz2) --concurrency N (2) --json
 *   --soak N: instead, one worker signs N releases one after another (the first cold, the rest from the
 *   entry cache: the locale-output tier is off so every locale is assembled again) and its resident size
 *   (VmRSS) is read after each — a long-running worker must not grow with the releases it has seen.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/index.js';
import { generateDevKeys } from '../src/keys/index.js';
import { Pipeline, signRelease } from '../src/pipeline/index.js';
import { loadReleaseRequest, resolveRequest } from '../src/release/request.js';
import { BullReleaseQueue } from '../src/queue/bullmq.js';
import { redisSettings } from '../src/queue/connection.js';
import { validateRelease } from '../src/queue/manifest.js';
import { PROJECT_ROOT } from '../src/version.js';
import { TestRedis } from '../test/helpers/redis.js';
import { generateRelease, type BenchCodec } from './lib/release-gen.js';

const ROOT = join(PROJECT_ROOT, '.cache', 'bench-service');

interface Run {
  mode: string;
  cache: 'cold' | 'warm';
  seconds: number;
  /** CPU seconds of the signing process(es) during the release (all threads). */
  cpu: number;
  signOperations: number;
}

/** utime+stime of a process in seconds (/proc/<pid>/stat fields 14 and 15, clock ticks of 1/100 s). */
function procCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const { values } = parseArgs({
  options: {
    locales: { type: 'string', default: '6' },
    'mb-per-locale': { type: 'string', default: '8' },
    codec: { type: 'string', default: 'bz2' },
    concurrency: { type: 'string', default: '2' },
    soak: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const locales = Number(values.locales);
const mbPerLocale = Number(values['mb-per-locale']);
const codec = values.codec as BenchCodec;
const concurrency = Number(values.concurrency);
const cores = availableParallelism();
const log = (m: string) => process.stderr.write(`# ${m}\n`);

/** Resident set size of a process in MB (/proc/<pid>/status VmRSS). */
function procRssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

async function main(): Promise<void> {
  if (values.soak !== undefined) return soak(Number(values.soak));
  await mkdir(ROOT, { recursive: true });
  const keysDir = join(ROOT, 'keys');
  if (!existsSync(join(keysDir, 'marsign.config.json'))) await generateDevKeys(keysDir, { marKeyBits: 4096 });
  const release = await generateRelease({ codec, locales, mbPerLocale, log });
  log(
    `release ${release.dir}: ${release.locales.length} locales, ${(release.totalBytes / 1e6).toFixed(1)} MB`,
  );

  const redis = await TestRedis.start();
  const runDir = join(ROOT, `run-${process.pid}`);
  await mkdir(runDir, { recursive: true });
  const base = JSON.parse(await readFile(join(keysDir, 'marsign.config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const configFor = async (name: string): Promise<string> => {
    const path = join(keysDir, `bench-service-${name}.json`);
    await writeFile(
      path,
      JSON.stringify({
        ...base,
        cache: { dir: join(runDir, `cache-${name}`) },
        redis: { url: redis.url, prefix: `b-${name}` },
        server: { roots: [runDir, release.dir] },
      }),
    );
    return path;
  };
  const { request, base: requestBase, source } = await loadReleaseRequest(release.releaseJson);
  const runs: Run[] = [];
  const workers: ChildProcess[] = [];
  try {
    // Embedded: the in-process pipeline, as `marsign sign-release` runs it.
    {
      const config = await loadConfig(await configFor('embedded'));
      for (const cache of ['cold', 'warm'] as const) {
        const pipeline = await Pipeline.create({ config, threads: cores });
        // Warm every pool thread (keys loaded) as a started worker's canary does, outside the timing.
        await Promise.all(Array.from({ length: cores }, () => pipeline.canary('dev')));
        const t = performance.now();
        const c0 = selfCpu();
        const outDir = join(runDir, `out-embedded-${cache}`);
        const m = await signRelease({
          signer: pipeline,
          release: request.release,
          source,
          locales: resolveRequest(request, requestBase, outDir, '.'),
          outDir,
          profile: 'dev',
          concurrency,
        });
        const seconds = (performance.now() - t) / 1000;
        const cpu = selfCpu() - c0;
        await pipeline.close();
        if (m.totals.failed > 0) throw new Error(`embedded ${cache}: ${m.totals.failed} locales failed`);
        const ops = m.totals.signOperations;
        runs.push({ mode: 'embedded (sign-release)', cache, seconds, cpu, signOperations: ops });
        log(`embedded ${cache}: ${seconds.toFixed(2)} s`);
      }
    }
    for (const n of [1, 2]) {
      const cfgPath = await configFor(`w${n}`);
      const config = await loadConfig(cfgPath);
      const threads = Math.max(1, Math.floor(cores / n));
      const procs = Array.from({ length: n }, () => startWorker(cfgPath, threads));
      workers.push(...procs.map((p) => p.proc));
      await Promise.all(procs.map((p) => p.ready));
      const queue = new BullReleaseQueue(redisSettings(config));
      for (const cache of ['cold', 'warm'] as const) {
        const id = `bench-w${n}-${cache}`;
        const manifest = await validateRelease(
          {
            release: id,
            profile: 'dev',
            locales: request.locales.map((l) => ({
              locale: l.locale,
              input: resolve(requestBase, l.input),
              output: join(runDir, `out-w${n}-${cache}`, l.locale),
            })),
          },
          { profiles: ['dev'], roots: [runDir, release.dir], baseDir: runDir },
        );
        const cpuOf = () => procs.reduce((a, p) => a + procCpu(p.proc.pid!), 0);
        const c0 = cpuOf();
        const t = performance.now();
        await queue.submit(manifest, { client: 'bench' });
        for (;;) {
          const s = await queue.get(id);
          if (s?.state === 'failed') throw new Error(`release ${id} failed: ${JSON.stringify(s.error)}`);
          if (s?.state === 'completed') {
            const seconds = (performance.now() - t) / 1000;
            const cpu = cpuOf() - c0;
            const ops = s.locales.reduce((a, l) => a + (l.result?.signOperations ?? 0), 0);
            runs.push({
              mode: `service, ${n} worker${n > 1 ? 's' : ''} × ${threads} thread${threads > 1 ? 's' : ''}`,
              cache,
              seconds,
              cpu,
              signOperations: ops,
            });
            log(`${n} worker(s) ${cache}: ${seconds.toFixed(2)} s`);
            break;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await queue.close();
      for (const p of procs) {
        p.proc.kill('SIGTERM');
        await new Promise((r) => p.proc.once('exit', r));
      }
    }
  } finally {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await redis.stop();
    await rm(runDir, { recursive: true, force: true });
  }

  const emb = (c: string) => runs.find((r) => r.mode.startsWith('embedded') && r.cache === c)!;
  const rows = runs.map((r) => ({
    ...r,
    ratio: r.seconds / emb(r.cache).seconds,
    overheadPerLocaleMs: ((r.seconds - emb(r.cache).seconds) * 1000) / locales,
    cpuRatio: r.cpu / emb(r.cache).cpu,
    cpuOverheadPerLocaleMs: ((r.cpu - emb(r.cache).cpu) * 1000) / locales,
  }));
  if (values.json) {
    process.stdout.write(JSON.stringify({ locales, mbPerLocale, codec, cores, rows }, null, 2) + '\n');
    return;
  }
  const lines = [
    `Run on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cpus()[0]?.model ?? 'cpu'} ×${cores}, Node ${process.versions.node}, ` +
      `load average ${loadavg()[0]!.toFixed(1)} at the end. Release: ${locales} locales × ${mbPerLocale} MB PE content (${codec}), ` +
      `${(release.totalBytes / 1e6).toFixed(1)} MB of MARs; locale concurrency ${concurrency}.`,
    '',
    '| mode | cache | wall s | × embedded | wall overhead / locale | CPU s | × embedded | CPU overhead / locale | sign ops |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => {
      const e = r.mode.startsWith('embedded');
      return (
        `| ${r.mode} | ${r.cache} | ${r.seconds.toFixed(2)} | ${r.ratio.toFixed(2)} | ${e ? '–' : `${r.overheadPerLocaleMs.toFixed(0)} ms`} ` +
        `| ${r.cpu.toFixed(2)} | ${r.cpuRatio.toFixed(2)} | ${e ? '–' : `${r.cpuOverheadPerLocaleMs.toFixed(0)} ms`} | ${r.signOperations} |`
      );
    }),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

/** Worker RSS after each of `n` releases (see --soak). */
async function soak(n: number): Promise<void> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`--soak must be a positive integer, got ${values.soak}`);
  await mkdir(ROOT, { recursive: true });
  const keysDir = join(ROOT, 'keys');
  if (!existsSync(join(keysDir, 'marsign.config.json'))) await generateDevKeys(keysDir, { marKeyBits: 4096 });
  const release = await generateRelease({ codec, locales, mbPerLocale, log });
  const redis = await TestRedis.start();
  const runDir = join(ROOT, `run-${process.pid}`);
  await mkdir(runDir, { recursive: true });
  const base = JSON.parse(await readFile(join(keysDir, 'marsign.config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const cfgPath = join(keysDir, 'bench-service-soak.json');
  await writeFile(
    cfgPath,
    JSON.stringify({
      ...base,
      cache: { dir: join(runDir, 'cache'), outputs: false },
      redis: { url: redis.url, prefix: 'b-soak' },
      server: { roots: [runDir, release.dir] },
    }),
  );
  const config = await loadConfig(cfgPath);
  const { request, base: requestBase } = await loadReleaseRequest(release.releaseJson);
  const w = startWorker(cfgPath, cores);
  const samples: { release: number; rssMb: number; seconds: number }[] = [];
  const queue = new BullReleaseQueue(redisSettings(config));
  try {
    await w.ready;
    for (let i = 1; i <= n; i++) {
      const id = `soak-${i}`;
      const manifest = await validateRelease(
        {
          release: id,
          profile: 'dev',
          locales: request.locales.map((l) => ({
            locale: l.locale,
            input: resolve(requestBase, l.input),
            output: join(runDir, 'out', l.locale),
          })),
        },
        { profiles: ['dev'], roots: [runDir, release.dir], baseDir: runDir },
      );
      const t = performance.now();
      await queue.submit(manifest, { client: 'bench' });
      for (;;) {
        const st = await queue.get(id);
        if (st?.state === 'failed') throw new Error(`release ${id} failed: ${JSON.stringify(st.error)}`);
        if (st?.state === 'completed') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      samples.push({ release: i, rssMb: procRssMb(w.proc.pid!), seconds: (performance.now() - t) / 1000 });
      log(`release ${i}: worker RSS ${samples.at(-1)!.rssMb.toFixed(0)} MB`);
    }
  } finally {
    await queue.close();
    w.proc.kill('SIGTERM');
    await new Promise((r) => (w.proc.exitCode !== null ? r(undefined) : w.proc.once('exit', r)));
    await redis.stop();
    await rm(runDir, { recursive: true, force: true });
  }
  const at = (k: number) => samples[Math.min(k, samples.length) - 1]!.rssMb;
  const result = { locales, mbPerLocale, codec, cores, releases: n, samples, rssAt5: at(5), rssAtEnd: at(n) };
  if (values.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return;
  }
  const pick = samples.filter((x) => x.release === 1 || x.release % 5 === 0 || x.release === n);
  process.stdout.write(
    [
      `Run on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cores} cores, load average ` +
        `${loadavg()[0]!.toFixed(1)} at the end. One worker (${cores} threads), ${n} releases of ${locales} locales × ` +
        `${mbPerLocale} MB (${codec}); the first cold, the rest from the entry cache (output tier off).`,
      '',
      '| after release | worker RSS MB | release s |',
      '|---:|---:|---:|',
      ...pick.map((x) => `| ${x.release} | ${x.rssMb.toFixed(0)} | ${x.seconds.toFixed(2)} |`),
      '',
      `RSS after ${n} releases / after 5: ${(result.rssAtEnd / result.rssAt5).toFixed(3)}`,
    ].join('\n') + '\n',
  );
}

function startWorker(config: string, threads: number): { proc: ChildProcess; ready: Promise<void> } {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(PROJECT_ROOT, 'src/cli/main.ts'),
      'worker',
      '-c',
      config,
      '--threads',
      String(threads),
      '--concurrency',
      String(concurrency),
      '--canary-interval',
      '0',
    ],
    { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"worker ready"')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`worker exited ${code}: ${out}`)));
  });
  return { proc, ready };
}

await main();
