/**
 * Service test harness: a private Redis, a config pointing at it, `marsign worker` child processes,
 * the HTTP server in-process, and independent checks of the outputs.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { decompress } from '../../src/codecs/index.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { readEntryBytes, readMar } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import type { ReleaseStatus } from '../../src/queue/types.js';
import { loadClients } from '../../src/service/auth.js';
import { createLogger } from '../../src/service/logger.js';
import { buildServer, type Service } from '../../src/service/server.js';
import { PROJECT_ROOT } from '../helpers/env.js';

export const FIXTURE = join(PROJECT_ROOT, 'fixtures', 'release');
export const KEYS = join(FIXTURE, 'keys');
export const LOCALES = ['en-US', 'de', 'fr', 'ja'] as const;
export const TOKEN_ENV = 'MARSIGN_TEST_API_TOKEN';

/**
 * Profiles differ only in programName, so each has its own signer fingerprint and so its own cold
 * cache: each scenario really signs.
 */
export function writeConfig(
  dir: string,
  redisUrl: string,
  profiles: string[],
  /** Server settings besides `roots` (default: the legacy single token from TOKEN_ENV). */
  server: Record<string, unknown> = { tokenEnv: TOKEN_ENV },
): string {
  const prof = (name: string) => ({
    authenticode: {
      certChain: join(KEYS, 'codesign.chain.pem'),
      key: join(KEYS, 'codesign.key.pem'),
      digest: 'sha256',
      programName: `marsign test ${name}`,
    },
    mar: { keys: [join(KEYS, 'mar.key.pem')], algorithm: 'sha384' },
  });
  const cfg = {
    cache: { dir: join(dir, 'cache') },
    redis: { url: redisUrl, prefix: `t${randomBytes(3).toString('hex')}` },
    server: { ...server, roots: [dir, FIXTURE] },
    profiles: Object.fromEntries(profiles.map((p) => [p, prof(p)])),
  };
  mkdirSync(join(dir, 'cache'), { recursive: true });
  const path = join(dir, 'marsign.config.json');
  writeFileSync(path, JSON.stringify(cfg, null, 2));
  return path;
}

/** A release dir of copies of the fixture MARs (optionally more locales, cycling through them). */
export function copyRelease(dir: string, locales: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  locales.forEach((l, i) => {
    const src = join(FIXTURE, LOCALES[i % LOCALES.length]!, 'complete.mar');
    mkdirSync(join(dir, l), { recursive: true });
    copyFileSync(src, join(dir, l, 'complete.mar'));
    out[l] = join(dir, l, 'complete.mar');
  });
  return out;
}

export class WorkerProcess {
  private out = '';
  readonly exited: Promise<number | null>;
  constructor(readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.out += d.toString()));
    this.exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  }
  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
  get log(): string {
    return this.out;
  }
  get id(): string | undefined {
    return /"worker":"([^"]+)"[^\n]*"msg":"worker ready"/.exec(this.out)?.[1];
  }
  async ready(timeoutMs = 60_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!this.id) {
      if (this.proc.exitCode !== null) throw new Error(`worker exited ${this.proc.exitCode}: ${this.out}`);
      if (Date.now() > end) throw new Error(`worker not ready: ${this.out}`);
      await sleep(100);
    }
  }
}

export function spawnWorker(
  config: string,
  extra: string[] = [],
  o: { concurrency?: number; threads?: number; lockDuration?: number } = {},
): WorkerProcess {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(PROJECT_ROOT, 'src/cli/main.ts'),
      'worker',
      '-c',
      config,
      '--concurrency',
      String(o.concurrency ?? 2),
      '--threads',
      String(o.threads ?? 1),
      // Short job locks so a SIGKILLed worker's job is re-run within seconds.
      '--lock-duration',
      String(o.lockDuration ?? 3000),
      '--stalled-interval',
      '1000',
      '--shutdown-timeout',
      '20000',
      // A SIGKILLed holder's single-flight lock expires this fast.
      '--sign-lock',
      '3000',
      ...extra,
    ],
    { cwd: PROJECT_ROOT, env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return new WorkerProcess(proc);
}

export interface RunningServer {
  svc: Service;
  url: string;
  config: LoadedConfig;
  logs: () => string;
  close(): Promise<void>;
}

/** The server of a config, its clients' tokens read from the environment/files the config names. */
export async function startServer(configPath: string): Promise<RunningServer> {
  const config = await loadConfig(configPath);
  const clients = await loadClients(config);
  let logs = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs += chunk.toString();
      cb();
    },
  });
  const svc = await buildServer({ config, clients, logger: createLogger({ level: 'info' }, sink) });
  const address = await svc.app.listen({ host: '127.0.0.1', port: 0 });
  return { svc, url: address, config, logs: () => logs, close: () => svc.close() };
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 90_000,
  everyMs = 100,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function readManifest(output: string): LocaleManifest {
  return JSON.parse(readFileSync(`${output}.manifest.json`, 'utf8')) as LocaleManifest;
}

/** Files under a dir (relative), recursively. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p, join(rel, n));
      else out.push(join(rel, n));
    }
  };
  walk(dir, '');
  return out;
}

/** Exactly `<locale>/complete.mar` and its manifest per locale: no temp files, no extras. */
export function assertOutputTree(outDir: string, locales: string[]): void {
  const expected = locales
    .flatMap((l) => [join(l, 'complete.mar'), join(l, 'complete.mar.manifest.json')])
    .sort();
  assert.deepEqual(listFiles(outDir).sort(), expected);
}

/**
 * Distinct PEs among the release's signable entries (the decoded PE's sha256, whatever codec stores it):
 * what a cold release must sign — a PE met in a bz2 and an xz entry is signed once.
 */
export async function distinctSigned(status: ReleaseStatus): Promise<number> {
  const pes = new Set<string>();
  for (const l of status.locales) {
    const m = readManifest(l.output);
    const src = await FileSource.open(l.input);
    try {
      const info = await readMar(src);
      for (const e of m.entries) {
        if (e.action !== 'signed' && e.action !== 'shared' && e.action !== 'cached') continue;
        const entry = info.entries.find((x) => x.name === e.name)!;
        const pe = await decompress(await readEntryBytes(src, entry));
        pes.add(createHash('sha256').update(pe).digest('hex'));
      }
    } finally {
      await src.close();
    }
  }
  return pes.size;
}
