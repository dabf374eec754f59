/**
 * Shared test helpers: where ../shared is, temp dirs, running the CLI as a user would, the PE corpus.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after } from 'node:test';
import { PROJECT_ROOT } from '../../src/version.js';
import { corpusDir, readCorpus } from './pe-corpus.js';

export { PROJECT_ROOT };

/** `--import` value for tsx that works from any working directory (a bare `tsx` resolves from cwd). */
export const TSX_IMPORT = import.meta.resolve('tsx');

/**
 * `MARSIGN_HIDE_SHARED=1` runs the tests as on a clone without `../shared`, even under CI=true: `.ci/run`
 * runs the files that use it a second time that way (`npm run test:no-shared`), so a test that needs it
 * without skipping fails on CI.
 */
export const SHARED_HIDDEN = process.env.MARSIGN_HIDE_SHARED === '1';

/** `../shared` beside the checkout, or $MARSIGN_SHARED_DIR; a path that does not exist when hidden. */
export const SHARED_DIR = SHARED_HIDDEN
  ? join(tmpdir(), `marsign-shared-hidden-${process.pid}`, 'shared')
  : resolve(process.env.MARSIGN_SHARED_DIR ?? join(PROJECT_ROOT, '..', 'shared'));
export const PEER_MAR_DIR = join(SHARED_DIR, 'fixtures', 'peer-mar');

/**
 * The reason tests that need ../shared are skipped, or undefined when it is present.
 * On CI (CI=true) ../shared is always there, so its absence is a failure, not a skip (unless hidden on purpose).
 */
export const SHARED_SKIP: string | undefined = (() => {
  if (SHARED_HIDDEN) return '../shared hidden by MARSIGN_HIDE_SHARED=1';
  if (existsSync(PEER_MAR_DIR)) return undefined;
  if (process.env.CI === 'true') throw new Error(`CI=true but ${PEER_MAR_DIR} is missing`);
  return `../shared not found: no ${PEER_MAR_DIR} (set MARSIGN_SHARED_DIR to the shared folder)`;
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

let corpusResult: string[] | string | undefined;

/**
 * The real third-party PE corpus (test/helpers/pe-corpus.ts): built on first use from Debian packages by
 * scripts/pe-corpus.ts into $MARSIGN_CORPUS_DIR or .cache/pe-corpus (gitignored) and reused afterwards.
 * Returns the file list (absolute paths, sorted), or the reason it cannot be built here (no apt, no package
 * lists, no network; or MARSIGN_PE_CORPUS=off) for the caller to skip with. On CI a missing corpus fails.
 */
export function peCorpus(): string[] | string {
  corpusResult ??= loadPeCorpus();
  return corpusResult;
}

function loadPeCorpus(): string[] | string {
  if (process.env.MARSIGN_PE_CORPUS === 'off') return 'PE corpus turned off by MARSIGN_PE_CORPUS=off';
  const dir = corpusDir();
  const ready = readCorpus(dir);
  if (ready) return ready;
  const script = join(PROJECT_ROOT, 'scripts', 'pe-corpus.ts');
  const r = spawnSync(process.execPath, ['--import', TSX_IMPORT, script, dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    timeout: 900_000,
  });
  if (r.status === 3) {
    const reason = `PE corpus unavailable: ${r.stdout.trim()} (scripts/pe-corpus.ts)`;
    if (process.env.CI === 'true') throw new Error(`CI=true but the ${reason}`);
    return reason;
  }
  if (r.status !== 0) throw new Error(`scripts/pe-corpus.ts ${dir} failed (status ${r.status}): ${r.stdout}`);
  const built = readCorpus(dir);
  if (!built) throw new Error(`scripts/pe-corpus.ts succeeded but ${dir} holds no corpus`);
  return built;
}

/** The pid of a process that has exited and been reaped: no process has it now (for stale-temp tests). */
export function deadPid(): number {
  for (;;) {
    const pid = spawnSync('true').pid!;
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}
