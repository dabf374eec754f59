/**
 * Shared test helpers: where ../shared is, temp dirs, running the CLI as a user would, the PE corpus.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after } from 'node:test';
import { PROJECT_ROOT } from '../../src/version.js';

export { PROJECT_ROOT };

/** `--import` value for tsx that works from any working directory (a bare `tsx` resolves from cwd). */
export const TSX_IMPORT = import.meta.resolve('tsx');

/** `../shared` beside the checkout, or $MARSIGN_SHARED_DIR. */
export const SHARED_DIR = resolve(process.env.MARSIGN_SHARED_DIR ?? join(PROJECT_ROOT, '..', 'shared'));
export const PEER_MAR_DIR = join(SHARED_DIR, 'fixtures', 'peer-mar');

/**
 * The reason tests that need ../shared are skipped, or undefined when it is present.
 * On CI (CI=true) ../shared is always there, so its absence is a failure, not a skip.
 */
export const SHARED_SKIP: string | undefined = (() => {
  if (existsSync(PEER_MAR_DIR)) return undefined;
  if (process.env.CI === 'true') throw new Error(`CI=true but ${SHARED_DIR} is missing`);
  return `skipped: ${SHARED_DIR} not found (set MARSIGN_SHARED_DIR)`;
})();

export function peerMar(rel: string): string {
  return join(PEER_MAR_DIR, rel);
}

/** A fresh temp directory removed when the test file finishes. */
export function tempDir(prefix = 'marsign-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `marsign ARGS` from the TypeScript sources in a child process, as a user would. */
export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', TSX_IMPORT, join(PROJECT_ROOT, 'src/cli/main.ts'), ...args],
      {
        cwd: opts.cwd ?? PROJECT_ROOT,
        env: { ...process.env, ...opts.env },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * The real third-party PE corpus built by ../shared/corpus/pe-corpus.sh, cached in
 * $MARSIGN_CORPUS_DIR or .cache/pe-corpus (gitignored) between runs. Returns the file list
 * (absolute paths, sorted), or a skip reason string.
 */
export function peCorpus(): string[] | string {
  const script = join(SHARED_DIR, 'corpus', 'pe-corpus.sh');
  if (!existsSync(script)) return `skipped: ${script} not found`;
  const dir = resolve(process.env.MARSIGN_CORPUS_DIR ?? join(PROJECT_ROOT, '.cache', 'pe-corpus'));
  const stamp = join(dir, 'wine64');
  if (!existsSync(stamp)) {
    rmSync(dir, { recursive: true, force: true });
    const r = spawnSync('bash', [script, dir], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000 });
    if (r.status !== 0) throw new Error(`pe-corpus.sh failed with status ${r.status}`);
  }
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(dir);
  return files;
}
