/**
 * Transfer benchmark (`npm run bench:transfer`, issue 13): how many bytes go up and down, and how long
 * it takes, to get a release signed by a `marsign serve` over a shaped link (bench/lib/shaped-link.ts:
 * 100 Mbit/s each way, 10 ms each way = 20 ms RTT, a token bucket), against the naive way.
 *
 * Everything real: a private `redis-server`, `marsign serve` and `marsign worker` processes on free
 * ports, the client as the CLI (`marsign sign-release --remote`) through the link. Scenarios:
 * - naive: every MAR PUT whole, then every signed MAR GET whole, one HTTP/1.1 keep-alive connection
 *   (scp/rsync of whole files), plus the local `sign-release` time in the middle (cold for build 1;
 *   the warm figure uses the local warm time: the fairest naive for a server that has seen the binaries);
 * - `--remote` cold: build 1, empty server cache, empty client cache;
 * - `--remote` warm: build 2 (the same binaries, a new non-PE file: the next build of the same
 *   version), the server has signed build 1, an empty client cache;
 * - `--remote` warm + client cache: build 3 with the client cache of the build-1 run;
 * - local `sign-release` (cold, build 1; warm, build 2) for reference;
 * - many small blobs (N × K KiB, fresh random bytes each): a connection per request, one keep-alive
 *   connection, a keep-alive pool (8 connections, 8 in flight), HTTP/2 (one connection, 32 in flight).
 * Bytes are counted at the link (wire bytes: HTTP framing and queries included). CPU seconds: the
 * client / local sign-release process (`/usr/bin/time`), the server and worker (`/proc`).
 *
 * Options: --locales N (20) --mb-per-locale MB (80, release-gen's default, the release) --codec bz2|xz (bz2) --blobs N (500) --blob-kib K (16)
 *          --no-write (do not write docs/bench/transfer-results.json) --json
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { compress } from '../src/codecs/index.js';
import { readEntryBytes, readMar } from '../src/formats/mar/index.js';
import { FileSource } from '../src/io/byte-source.js';
import { generateDevKeys } from '../src/keys/index.js';
import { MarWriter } from '../src/mar/writer.js';
import { RemoteClient } from '../src/transfer/client.js';
import { splitContainer } from '../src/transfer/recipe.js';
import type { TransportKind } from '../src/transfer/transport.js';
import { PROJECT_ROOT } from '../src/version.js';
import { buildCli } from './lib/compiled-cli.js';
import { TestRedis } from '../test/helpers/redis.js';
import { CODEC_SETTINGS, generateRelease, type BenchCodec } from './lib/release-gen.js';
import { shapedLink, type ShapedLink } from './lib/shaped-link.js';

const ROOT = join(PROJECT_ROOT, '.cache', 'bench-transfer');
const TOKEN_ENV = 'MARSIGN_BENCH_TRANSFER_TOKEN';
const TOKEN = randomBytes(24).toString('hex');
const LINK = { rate: 100e6 / 8, delayMs: 10 };
const MB = 1e6;

const { values } = parseArgs({
  options: {
    locales: { type: 'string', default: '20' },
    'mb-per-locale': { type: 'string', default: '80' },
    codec: { type: 'string', default: 'bz2' },
    blobs: { type: 'string', default: '500' },
    'blob-kib': { type: 'string', default: '16' },
    'no-write': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const localesN = Number(values.locales);
const mbPerLocale = Number(values['mb-per-locale']);
const codec = values.codec as BenchCodec;
const blobsN = Number(values.blobs);
const blobKiB = Number(values['blob-kib']);
const log = (m: string) => process.stderr.write(`# ${m}\n`);
/** Node arguments that start the marsign CLI: the compiled JS users run (set in main), not tsx. */
let CLI: string[] = [];

interface Row {
  scenario: string;
  bytesUp: number;
  bytesDown: number;
  wallSeconds: number;
  /** CPU seconds: client (or local sign-release) + server + worker. */
  cpuSeconds: { client: number; server: number; worker: number };
  notes?: Record<string, unknown>;
}

/** utime+stime of a live process (/proc/<pid>/stat fields 14 and 15, 1/100 s ticks). */
function procCpu(pid: number | undefined): number {
  if (pid === undefined || !existsSync(`/proc/${pid}/stat`)) return 0;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** `marsign ARGS` under /usr/bin/time: its stdout, exit code, wall and CPU seconds. */
function runCli(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string; wall: number; cpu: number }> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn('/usr/bin/time', ['-f', 'CPU %U %S', process.execPath, ...CLI, ...args], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, [TOKEN_ENV]: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const wall = (performance.now() - t) / 1000;
      const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
      resolve({ code: code ?? -1, stdout, stderr, wall, cpu: m ? Number(m[1]) + Number(m[2]) : NaN });
    });
  });
}

function startProcess(args: string[], readyText: string): { proc: ChildProcess; ready: Promise<void> } {
  const proc = spawn(process.execPath, [...CLI, ...args], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, [TOKEN_ENV]: TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    const on = (d: Buffer) => {
      if (process.env.MARSIGN_BENCH_LOG) process.stderr.write(`[${args[0]}] ${d.toString()}`);
      out = (out + d.toString()).slice(-20_000);
      if (out.includes(readyText)) resolve();
    };
    proc.stdout!.on('data', on);
    proc.stderr!.on('data', on);
    proc.once('exit', (code) => reject(new Error(`${args[0]} exited ${code}: ${out.slice(-2000)}`)));
  });
  return { proc, ready };
}

/**
 * Build N of the release: every entry of build 1 as is (the same binaries) plus a small new non-PE
 * file (`buildid.ini`), under a new release id — the next build of the same version.
 */
async function deriveBuild(
  build1: string,
  locales: { locale: string; path: string }[],
  n: number,
): Promise<string> {
  const dir = join(ROOT, `build${n}-${basename(dirname(build1))}`);
  const releaseJson = join(dir, 'release.json');
  if (existsSync(releaseJson)) return releaseJson;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  const buildId = await compress(Buffer.from(`[Build]\nBuildID=2026120${n}000000\n`), CODEC_SETTINGS[codec]);
  const out: Record<string, string> = {};
  for (const l of locales) {
    const src = await FileSource.open(l.path);
    try {
      const info = await readMar(src);
      const entries: { name: string; flags: number; data: Uint8Array }[] = [];
      for (const e of info.entries)
        entries.push({ name: e.name, flags: e.flags, data: await readEntryBytes(src, e) });
      entries.push({ name: 'buildid.ini', flags: 0o644, data: buildId });
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      await mkdir(join(tmp, l.locale), { recursive: true });
      const w = await MarWriter.create(join(tmp, l.locale, basename(l.path)), {
        productInfo: { channel: info.productInfo!.channel, version: info.productInfo!.version },
        signatureSlots: [],
      });
      for (const e of entries) await w.addEntry(e.name, e.flags, e.data);
      await w.finish();
      await w.commit();
      out[l.locale] = join(dir, l.locale, basename(l.path));
    } finally {
      await src.close();
    }
  }
  await writeFile(
    join(tmp, 'release.json'),
    JSON.stringify({ release: `bench-transfer-build${n}`, profile: 'dev', locales: out }, null, 2) + '\n',
  );
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return releaseJson;
}

/** Sum of the sizes of the distinct entry blobs (and of the distinct skeletons) of some containers. */
async function uniqueBytes(paths: string[]): Promise<{ entries: number; skeletons: number; total: number }> {
  const entries = new Map<string, number>();
  let skeletons = 0;
  let total = 0;
  for (const p of paths) {
    const src = await FileSource.open(p);
    try {
      const { recipe } = await splitContainer(src, p);
      for (const e of recipe.entries) entries.set(e.sha256, e.size);
      skeletons += recipe.skeleton.size;
      total += recipe.size;
    } finally {
      await src.close();
    }
  }
  return { entries: [...entries.values()].reduce((a, b) => a + b, 0), skeletons, total };
}

async function signedFiles(outDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(outDir, { withFileTypes: true }))
    if (d.isDirectory())
      for (const f of await readdir(join(outDir, d.name)))
        if (f.endsWith('.mar') || f.endsWith('.zip')) out.push(join(outDir, d.name, f));
  return out.sort();
}

const sha256File = async (p: string) =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

/** The naive transfer: a plain file server (PUT/GET of whole files), one keep-alive HTTP/1.1 connection. */
async function naiveServer(root: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').slice(1)).replace(/[^A-Za-z0-9._-]/g, '_');
    const path = join(root, name);
    if (req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        writeFile(path, Buffer.concat(chunks)).then(
          () => res.writeHead(201).end(),
          () => res.writeHead(500).end(),
        );
      });
    } else {
      readFile(path).then(
        (b) => res.writeHead(200, { 'content-length': b.length }).end(b),
        () => res.writeHead(404).end(),
      );
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function httpRequest(agent: http.Agent, url: string, method: 'PUT' | 'GET', body?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method, agent, headers: body ? { 'content-length': body.length } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          res.statusCode! < 300
            ? resolve(Buffer.concat(chunks))
            : reject(new Error(`${method} ${url}: ${res.statusCode}`)),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Upload `n` fresh random blobs of `size` bytes over one transport, `inflight` at a time. */
async function smallBlobs(
  link: ShapedLink,
  kind: TransportKind,
  inflight: number,
  n: number,
  size: number,
): Promise<{ seconds: number; up: number; down: number; connections: number }> {
  const blobs = Array.from({ length: n }, () => randomBytes(size));
  const client = new RemoteClient({ url: link.url, token: TOKEN, transport: kind });
  link.reset();
  const t = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < blobs.length) {
        const b = blobs[next++]!;
        await client.upload(createHash('sha256').update(b).digest('hex'), b);
      }
    }),
  );
  const seconds = (performance.now() - t) / 1000;
  await client.close();
  return { seconds, ...link.stats() };
}

async function main(): Promise<void> {
  const t0 = performance.now();
  await mkdir(ROOT, { recursive: true });
  // MARSIGN_BENCH_NODE_ARGS: Node flags for every marsign process (e.g. `--cpu-prof --cpu-prof-dir=DIR`).
  const nodeArgs = process.env.MARSIGN_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  CLI = [...nodeArgs, ...(await buildCli(PROJECT_ROOT, join(ROOT, 'dist'), log))];
  const keysDir = join(ROOT, 'keys');
  if (!existsSync(join(keysDir, 'marsign.config.json'))) await generateDevKeys(keysDir, { marKeyBits: 4096 });
  const gen = await generateRelease({ codec, locales: localesN, mbPerLocale, log });
  const build1 = gen.releaseJson;
  const build2 = await deriveBuild(build1, gen.locales, 2);
  const build3 = await deriveBuild(build1, gen.locales, 3);
  const inputs1 = gen.locales.map((l) => l.path);
  log(
    `release: ${localesN} locales × ${mbPerLocale} MB PE content (${codec}), ${(gen.totalBytes / MB).toFixed(1)} MB of MARs`,
  );

  const run = join(ROOT, `run-${process.pid}`);
  await rm(run, { recursive: true, force: true });
  await mkdir(run, { recursive: true });
  const redis = await TestRedis.start();
  const base = JSON.parse(await readFile(join(keysDir, 'marsign.config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const writeCfg = async (name: string, cacheDir: string) => {
    // Beside the keys: the config's key paths are relative to it.
    const path = join(keysDir, `bench-transfer-${name}.json`);
    await writeFile(
      path,
      JSON.stringify({
        ...base,
        cache: { dir: cacheDir },
        redis: { url: redis.url, prefix: `bt-${name}` },
        server: { tokenEnv: TOKEN_ENV, roots: [run] },
      }),
    );
    await mkdir(cacheDir, { recursive: true });
    return path;
  };
  const rows: Row[] = [];
  const procs: ChildProcess[] = [];
  let link: ShapedLink | undefined;
  let naiveLink: ShapedLink | undefined;
  let naive: { port: number; close(): Promise<void> } | undefined;
  try {
    // Local sign-release, for reference and for the naive run's signing time.
    const localCfg = await writeCfg('local', join(run, 'local-cache'));
    const local: Record<'cold' | 'warm', { wall: number; cpu: number; out: string }> = {} as never;
    for (const [cache, rel] of [
      ['cold', build1],
      ['warm', build2],
    ] as const) {
      const out = join(run, `local-${cache}`);
      const r = await runCli(['sign-release', rel, '-o', out, '-c', localCfg, '--json']);
      if (r.code !== 0) throw new Error(`local sign-release ${cache}: ${r.stderr.slice(-2000)}`);
      local[cache] = { wall: r.wall, cpu: r.cpu, out };
      rows.push({
        scenario: `local sign-release (${cache} cache, no transfer)`,
        bytesUp: 0,
        bytesDown: 0,
        wallSeconds: r.wall,
        cpuSeconds: { client: r.cpu, server: 0, worker: 0 },
      });
      log(`local ${cache}: ${r.wall.toFixed(1)} s`);
    }

    // Naive: whole MARs up, signed MARs down, one HTTP/1.1 keep-alive connection over the link.
    const naiveDir = join(run, 'naive');
    await mkdir(naiveDir, { recursive: true });
    naive = await naiveServer(naiveDir);
    naiveLink = await shapedLink({ host: '127.0.0.1', port: naive.port }, LINK);
    {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const c0 = process.cpuUsage();
      let t = performance.now();
      for (const p of inputs1)
        await httpRequest(agent, `${naiveLink.url}/${basename(dirname(p))}-in.mar`, 'PUT', await readFile(p));
      const upSeconds = (performance.now() - t) / 1000;
      const signed = await signedFiles(local.cold.out);
      // The signed files, as the signing host would hold them for the download.
      for (const p of signed)
        await writeFile(join(naiveDir, `${basename(dirname(p))}-out.mar`), await readFile(p));
      t = performance.now();
      for (const p of signed)
        await httpRequest(agent, `${naiveLink.url}/${basename(dirname(p))}-out.mar`, 'GET');
      const downSeconds = (performance.now() - t) / 1000;
      const cu = process.cpuUsage(c0);
      agent.destroy();
      const s = naiveLink.stats();
      for (const cache of ['cold', 'warm'] as const)
        rows.push({
          scenario: `naive (whole files, HTTP/1.1, local ${cache} signing time)`,
          bytesUp: s.up,
          bytesDown: s.down,
          wallSeconds: upSeconds + local[cache].wall + downSeconds,
          cpuSeconds: { client: (cu.user + cu.system) / 1e6 + local[cache].cpu, server: 0, worker: 0 },
          notes: { upSeconds, downSeconds, signSeconds: local[cache].wall, connections: s.connections },
        });
      log(`naive: up ${upSeconds.toFixed(1)} s, down ${downSeconds.toFixed(1)} s`);
    }

    // The server and a worker, with their own cache, behind the shaped link.
    const port = await freePort();
    const cfg = await writeCfg('server', join(run, 'server-cache'));
    const server = startProcess(['serve', '-c', cfg, '--port', String(port)], 'listening');
    procs.push(server.proc);
    const worker = startProcess(
      ['worker', '-c', cfg, '--threads', String(availableParallelism()), '--canary-interval', '0'],
      '"msg":"worker ready"',
    );
    procs.push(worker.proc);
    await Promise.all([server.ready, worker.ready]);
    link = await shapedLink({ host: '127.0.0.1', port }, LINK);

    const remote = async (scenario: string, rel: string, clientCache: string) => {
      const out = join(run, `out-${rows.length}`);
      link!.reset();
      const s0 = procCpu(server.proc.pid);
      const w0 = procCpu(worker.proc.pid);
      const args = ['sign-release', rel, '-o', out, '--remote', link!.url, '--token-env', TOKEN_ENV];
      const r = await runCli([...args, '--client-cache', clientCache, '--json']);
      if (r.code !== 0) throw new Error(`${scenario}: exit ${r.code}: ${r.stderr.slice(-3000)}`);
      const doc = JSON.parse(r.stdout) as { totals: { failed: number }; transfer: Record<string, number> };
      if (doc.totals.failed > 0) throw new Error(`${scenario}: ${doc.totals.failed} locales failed`);
      const s = link!.stats();
      rows.push({
        scenario,
        bytesUp: s.up,
        bytesDown: s.down,
        wallSeconds: r.wall,
        cpuSeconds: {
          client: r.cpu,
          server: procCpu(server.proc.pid) - s0,
          worker: procCpu(worker.proc.pid) - w0,
        },
        notes: { transfer: doc.transfer, connections: s.connections },
      });
      log(
        `${scenario}: ${r.wall.toFixed(1)} s, up ${(s.up / MB).toFixed(2)} MB, down ${(s.down / MB).toFixed(2)} MB`,
      );
      return out;
    };
    const cc1 = join(run, 'client-cache-1');
    const coldOut = await remote('--remote cold (empty server and client caches)', build1, cc1);
    await remote(
      '--remote warm (server has the binaries; next build, empty client cache)',
      build2,
      join(run, 'client-cache-2'),
    );
    await remote('--remote warm + warm client cache (next build)', build3, cc1);

    // Same bytes as local signing (a check of the benchmark, the tests assert it).
    const a = await signedFiles(coldOut);
    const b = await signedFiles(local.cold.out);
    let sameBytes = a.length === b.length;
    for (let i = 0; sameBytes && i < a.length; i++)
      sameBytes = (await sha256File(a[i]!)) === (await sha256File(b[i]!));

    const inUnique = await uniqueBytes(inputs1);
    const outUnique = await uniqueBytes(a);

    // Many small blobs.
    const small: Row[] = [];
    for (const [label, kind, inflight] of [
      ['connection per request (HTTP/1.1, sequential)', 'h1-close', 1],
      ['one keep-alive connection (HTTP/1.1, sequential)', 'h1', 1],
      ['keep-alive pool (HTTP/1.1, 8 connections, 8 in flight)', 'h1', 8],
      ['HTTP/2 (one connection, 32 streams in flight)', 'h2', 32],
    ] as const) {
      const s0 = procCpu(server.proc.pid);
      const c0 = process.cpuUsage();
      const r = await smallBlobs(link, kind, inflight, blobsN, blobKiB * 1024);
      const cu = process.cpuUsage(c0);
      small.push({
        scenario: label,
        bytesUp: r.up,
        bytesDown: r.down,
        wallSeconds: r.seconds,
        cpuSeconds: { client: (cu.user + cu.system) / 1e6, server: procCpu(server.proc.pid) - s0, worker: 0 },
        notes: { connections: r.connections, transport: kind, inflight },
      });
      log(`${blobsN} × ${blobKiB} KiB, ${label}: ${r.seconds.toFixed(2)} s, ${r.connections} connections`);
    }

    await report({
      rows,
      small,
      sameBytes,
      inUnique,
      outUnique,
      gen,
      benchSeconds: (performance.now() - t0) / 1000,
    });
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r)) : null)));
    await link?.close();
    await naiveLink?.close();
    await naive?.close();
    await redis.stop();
    await rm(run, { recursive: true, force: true });
  }
}

interface Report {
  rows: Row[];
  small: Row[];
  sameBytes: boolean;
  inUnique: { entries: number; skeletons: number; total: number };
  outUnique: { entries: number; skeletons: number; total: number };
  gen: { totalBytes: number; dir: string };
  benchSeconds: number;
}

async function report(r: Report): Promise<void> {
  const find = (prefix: string) => r.rows.find((x) => x.scenario.startsWith(prefix))!;
  const naiveCold = find('naive (whole files, HTTP/1.1, local cold');
  const naiveWarm = find('naive (whole files, HTTP/1.1, local warm');
  const cold = find('--remote cold');
  const warm = find('--remote warm (server');
  const warmCc = find('--remote warm + warm client');
  const naiveBytes = naiveCold.bytesUp + naiveCold.bytesDown;
  const moved = (x: Row) => x.bytesUp + x.bytesDown;
  const perReq = r.small[0]!;
  const chosen = r.small[3]!;
  const goals = {
    warm: {
      target:
        'bytes moved ≤ 2% of naive, wall ≥ 10× faster than naive (naive with the local warm signing time)',
      serverWarmClientCold: {
        bytesPctOfNaive: (100 * moved(warm)) / naiveBytes,
        speedup: naiveWarm.wallSeconds / warm.wallSeconds,
      },
      serverWarmClientWarm: {
        bytesPctOfNaive: (100 * moved(warmCc)) / naiveBytes,
        speedup: naiveWarm.wallSeconds / warmCc.wallSeconds,
      },
    },
    cold: {
      target: 'bytes up ≤ unique entry bytes + 10%; bytes down ≤ unique signed entry bytes + 10%',
      bytesUp: cold.bytesUp,
      uniqueEntryBytes: r.inUnique.entries,
      upRatio: cold.bytesUp / r.inUnique.entries,
      bytesDown: cold.bytesDown,
      uniqueSignedEntryBytes: r.outUnique.entries,
      downRatio: cold.bytesDown / r.outUnique.entries,
    },
    smallBlobs: {
      target: 'the chosen transport (HTTP/2) ≥ 5× the connection-per-request figure',
      speedup: perReq.wallSeconds / chosen.wallSeconds,
    },
  };
  const met = {
    warmServerOnly:
      goals.warm.serverWarmClientCold.bytesPctOfNaive <= 2 && goals.warm.serverWarmClientCold.speedup >= 10,
    warmWithClientCache:
      goals.warm.serverWarmClientWarm.bytesPctOfNaive <= 2 && goals.warm.serverWarmClientWarm.speedup >= 10,
    coldUp: goals.cold.upRatio <= 1.1,
    coldDown: goals.cold.downRatio <= 1.1,
    smallBlobs: goals.smallBlobs.speedup >= 5,
  };
  const machine = {
    date: new Date().toISOString(),
    cpu: `${cpus()[0]?.model ?? 'cpu'} ×${availableParallelism()}`,
    node: process.versions.node,
    loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
  };
  const doc = {
    command: 'npm run bench:transfer',
    options: { locales: localesN, mbPerLocale, codec, blobs: blobsN, blobKiB },
    link: {
      mbitPerSecondEachWay: (LINK.rate * 8) / 1e6,
      rttMs: 2 * LINK.delayMs,
      shaping: 'token bucket TCP proxy (bench/lib/shaped-link.ts)',
    },
    release: { marBytes: r.gen.totalBytes, uniqueInput: r.inUnique, uniqueSignedOutput: r.outUnique },
    machine,
    benchSeconds: r.benchSeconds,
    remoteSameBytesAsLocal: r.sameBytes,
    rows: r.rows.map((x) => ({
      ...x,
      bytesRatioToNaive: moved(x) / naiveBytes,
      wallRatioToNaive: x.wallSeconds / naiveCold.wallSeconds,
    })),
    smallBlobs: r.small.map((x) => ({
      ...x,
      speedupOverConnectionPerRequest: perReq.wallSeconds / x.wallSeconds,
    })),
    goals,
    met,
  };
  if (!values['no-write']) {
    const path = join(PROJECT_ROOT, 'docs', 'bench', 'transfer-results.json');
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, JSON.stringify(doc, null, 2) + '\n');
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    return;
  }
  process.stdout.write(markdown(doc, naiveCold, naiveBytes) + '\n');
}

/** A text bar (█ per 1/40 of the largest value). */
function bar(v: number, max: number, width = 40): string {
  const n = max > 0 ? Math.max(v > 0 ? 1 : 0, Math.round((v / max) * width)) : 0;
  return '█'.repeat(n);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the report document built just above
function markdown(doc: Record<string, any>, naive: Row, naiveBytes: number): string {
  const mb = (b: number) => (b / MB).toFixed(2);
  const rows = doc.rows as (Row & { bytesRatioToNaive: number; wallRatioToNaive: number })[];
  const small = doc.smallBlobs as (Row & { speedupOverConnectionPerRequest: number })[];
  const cpu = (x: Row) => (x.cpuSeconds.client + x.cpuSeconds.server + x.cpuSeconds.worker).toFixed(1);
  const maxMoved = Math.max(...rows.map((x) => x.bytesUp + x.bytesDown));
  const maxWall = Math.max(...rows.map((x) => x.wallSeconds));
  const g = doc.goals;
  const yes = (b: boolean) => (b ? '**met**' : '**not met**');
  return [
    `Run ${doc.machine.date.slice(0, 16).replace('T', ' ')} UTC, ${doc.machine.cpu}, Node ${doc.machine.node}, load average ` +
      `${doc.machine.loadAverage.join(' / ')} at the end (the machine is shared: wall times are dominated by the shaped link, CPU ` +
      `seconds are given beside them). Release: ${doc.options.locales} locales × ${doc.options.mbPerLocale} MB PE content ` +
      `(${doc.options.codec}), ${mb(doc.release.marBytes)} MB of MARs; unique entry bytes ${mb(doc.release.uniqueInput.entries)} MB in, ` +
      `${mb(doc.release.uniqueSignedOutput.entries)} MB signed out. Link: ${doc.link.mbitPerSecondEachWay} Mbit/s each way, ` +
      `${doc.link.rttMs} ms RTT. Bytes are wire bytes at the link. Remote output identical to local: ${doc.remoteSameBytesAsLocal}.`,
    '',
    '| scenario | up MB | down MB | moved × naive | wall s | wall × naive | CPU s (client+server+worker) |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (x) =>
        `| ${x.scenario} | ${mb(x.bytesUp)} | ${mb(x.bytesDown)} | ${x.bytesRatioToNaive.toFixed(4)} | ${x.wallSeconds.toFixed(1)} | ` +
        `${x.wallRatioToNaive.toFixed(3)} | ${cpu(x)} |`,
    ),
    '',
    '```text',
    'bytes moved (up + down)',
    ...rows.map(
      (x) =>
        `${x.scenario.slice(0, 58).padEnd(58)} ${bar(x.bytesUp + x.bytesDown, maxMoved).padEnd(40)} ${mb(x.bytesUp + x.bytesDown)} MB`,
    ),
    '',
    'wall time',
    ...rows.map(
      (x) =>
        `${x.scenario.slice(0, 58).padEnd(58)} ${bar(x.wallSeconds, maxWall).padEnd(40)} ${x.wallSeconds.toFixed(1)} s`,
    ),
    '```',
    '',
    `Many small blobs: ${doc.options.blobs} × ${doc.options.blobKiB} KiB, fresh random bytes, \`PUT /blobs/:sha256\` each.`,
    '',
    '| transport | wall s | × connection per request | connections | up MB | CPU s (client+server) |',
    '|---|---:|---:|---:|---:|---:|',
    ...small.map(
      (x) =>
        `| ${x.scenario} | ${x.wallSeconds.toFixed(2)} | ${x.speedupOverConnectionPerRequest.toFixed(1)} | ${String(x.notes?.connections)} | ` +
        `${mb(x.bytesUp)} | ${(x.cpuSeconds.client + x.cpuSeconds.server).toFixed(1)} |`,
    ),
    '',
    '```text',
    ...small.map(
      (x) =>
        `${x.scenario.slice(0, 58).padEnd(58)} ${bar(x.wallSeconds, small[0]!.wallSeconds).padEnd(40)} ${x.wallSeconds.toFixed(2)} s`,
    ),
    '```',
    '',
    'Goals:',
    `- warm (server has the binaries, empty client cache): ${g.warm.serverWarmClientCold.bytesPctOfNaive.toFixed(2)}% of naive bytes, ` +
      `${g.warm.serverWarmClientCold.speedup.toFixed(1)}× naive wall — ${yes(doc.met.warmServerOnly)};`,
    `- warm + warm client cache: ${g.warm.serverWarmClientWarm.bytesPctOfNaive.toFixed(2)}% of naive bytes, ` +
      `${g.warm.serverWarmClientWarm.speedup.toFixed(1)}× naive wall — ${yes(doc.met.warmWithClientCache)};`,
    `- cold: up ${mb(g.cold.bytesUp)} MB = ${g.cold.upRatio.toFixed(3)}× the unique entry bytes (${yes(doc.met.coldUp)}); down ` +
      `${mb(g.cold.bytesDown)} MB = ${g.cold.downRatio.toFixed(3)}× the unique signed entry bytes (${yes(doc.met.coldDown)});`,
    `- many small blobs: HTTP/2 ${g.smallBlobs.speedup.toFixed(1)}× connection per request — ${yes(doc.met.smallBlobs)}.`,
    `(naive = ${mb(naiveBytes)} MB moved, ${naive.wallSeconds.toFixed(1)} s with cold signing.)`,
  ].join('\n');
}

await main();
