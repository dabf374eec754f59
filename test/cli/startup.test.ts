/**
 * CLI start-up: each command loads only what it uses, when it runs (docs/ARCHITECTURE.md "CLI").
 * Every run here records the modules the child process loads (record-modules.mjs, a resolve hook plus
 * require.cache at exit) and checks that the service stack, the thread pool and node-forge stay out of
 * the commands that do not need them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { PROJECT_ROOT, tempDir, TSX_IMPORT, type CliResult } from '../helpers/env.js';

const RECORDER = fileURLToPath(new URL('./record-modules.mjs', import.meta.url));
const RELEASE = join(PROJECT_ROOT, 'fixtures', 'release');
const CONFIG = join(RELEASE, 'marsign.config.json');
const KEYS = join(RELEASE, 'keys');

/** The service (worker, enqueue, status, serve) and its dashboard tests only. */
const SERVICE_STACK = [
  'bullmq',
  'ioredis',
  'fastify',
  '@bull-board/api',
  '@bull-board/fastify',
  'pino',
  'prom-client',
  'playwright-core',
];
/** Loaded only when a pool starts (piscina), a PKCS#12 or dev key is made (node-forge), a bar is drawn. */
const ON_DEMAND = ['piscina', 'node-forge'];

interface Loaded {
  r: CliResult;
  /** npm packages loaded (nested node_modules included). */
  packages: Set<string>;
  /** The project's own modules, relative to the root, extension dropped (sources or dist alike). */
  own: string[];
}

/** Run the CLI from the sources (tsx) or from dist/ (bin/marsign.js) and record what it loads. */
function loadedBy(args: string[], opts: { env?: NodeJS.ProcessEnv; dist?: boolean } = {}): Promise<Loaded> {
  const record = join(tempDir('marsign-startup-'), 'modules.txt');
  const node = opts.dist
    ? ['--import', RECORDER, join(PROJECT_ROOT, 'bin', 'marsign.js')]
    : ['--import', TSX_IMPORT, '--import', RECORDER, join(PROJECT_ROOT, 'src', 'cli', 'main.ts')];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...node, ...args], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...opts.env, MARSIGN_RECORD_MODULES: record },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const packages = new Set<string>();
      const own = new Set<string>();
      for (const line of readFileSync(record, 'utf8').split('\n')) {
        if (line === '') continue;
        const path = line.startsWith('file:') ? fileURLToPath(line) : line;
        const pkgs = [...path.matchAll(/[\\/]node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/g)];
        if (pkgs.length) for (const m of pkgs) packages.add(m[1]!.replace(/\\/g, '/'));
        else if (path.startsWith(PROJECT_ROOT + sep)) {
          const rel = relative(PROJECT_ROOT, path).split(sep).join('/');
          if (!rel.startsWith('test/') && !rel.startsWith('bin/'))
            own.add(rel.replace(/^dist\//, '').replace(/\.(ts|js)$/, ''));
        }
      }
      resolvePromise({ r: { code: code ?? -1, stdout, stderr }, packages, own: [...own].sort() });
    });
  });
}

function assertNotLoaded(l: Loaded, names: string[], what: string): void {
  const found = names.filter((n) => l.packages.has(n));
  assert.deepEqual(found, [], `${what} loaded ${found.join(', ')}`);
}

/** A help run loads the command definitions (src/cli) and what every command shares, nothing else. */
function assertDefinitionsOnly(l: Loaded, what: string): void {
  const extra = l.own.filter((m) => !/^src\/cli\//.test(m) && m !== 'src/errors' && m !== 'src/version');
  assert.deepEqual(extra, [], `${what} loaded implementation modules`);
  assertNotLoaded(l, [...SERVICE_STACK, ...ON_DEMAND, 'picomatch'], what);
}

test('--help and <command> --help load the command definitions and yargs only', async () => {
  for (const args of [
    ['--help'],
    ['sign-locale', '--help'],
    ['mar', 'list', '--help'],
    ['worker', '--help'],
  ]) {
    const l = await loadedBy(args);
    assert.equal(l.r.code, 0, l.r.stderr);
    assert.match(l.r.stdout, /Options:/);
    assert.ok(l.packages.has('yargs'), `the recorder saw yargs for ${args.join(' ')}`);
    assert.ok(l.own.includes('src/cli/main'), 'the recorder saw the CLI itself');
    assertDefinitionsOnly(l, `marsign ${args.join(' ')}`);
  }
});

test('sign-locale starts piscina only on a miss; warm sign-locale (entry or output cache), verify and mar list load no service stack, pool or node-forge', async () => {
  const dir = tempDir();
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const input = join(RELEASE, 'de', 'complete.mar');
  const sign = (out: string, ...more: string[]) =>
    loadedBy(['sign-locale', input, '-o', out, '--profile', 'dev', '--config', CONFIG, '--json', ...more], {
      env,
    });

  // Cold: entries are signed in the pool, so piscina is loaded (the recorder sees a dynamic import).
  const cold = await sign(join(dir, 'cold.mar'));
  assert.equal(cold.r.code, 0, cold.r.stderr);
  assert.ok(JSON.parse(cold.r.stdout).totals.misses > 0);
  assert.ok(cold.packages.has('piscina'), 'a cold locale starts the pool');
  assertNotLoaded(cold, [...SERVICE_STACK, 'node-forge'], 'cold sign-locale');

  // Warm, entry cache only: every signable entry is a hit; no thread pool, no node-forge, no progress
  // bar (no TTY).
  const warmOut = join(dir, 'warm.mar');
  const warm = await sign(warmOut, '--no-output-cache');
  assert.equal(warm.r.code, 0, warm.r.stderr);
  const totals = JSON.parse(warm.r.stdout).totals;
  assert.equal(totals.misses, 0);
  assert.ok(totals.hits > 0);
  assertNotLoaded(warm, [...SERVICE_STACK, ...ON_DEMAND], 'warm sign-locale');

  // Warm, the whole output served by the locale-output tier.
  const served = await sign(join(dir, 'served.mar'));
  assert.equal(served.r.code, 0, served.r.stderr);
  assert.equal(JSON.parse(served.r.stdout).outputCache, 'hit');
  assertNotLoaded(served, [...SERVICE_STACK, ...ON_DEMAND], 'sign-locale from the output cache');

  const verify = await loadedBy([
    'verify',
    warmOut,
    '--mar-cert',
    join(KEYS, 'mar.cert.pem'),
    '--ca',
    join(KEYS, 'ca.cert.pem'),
    '--json',
  ]);
  assert.equal(verify.r.code, 0, verify.r.stdout + verify.r.stderr);
  assert.equal(JSON.parse(verify.r.stdout).ok, true);
  assertNotLoaded(verify, [...SERVICE_STACK, ...ON_DEMAND], 'verify');

  const list = await loadedBy(['mar', 'list', warmOut, '--json']);
  assert.equal(list.r.code, 0, list.r.stderr);
  assert.ok(JSON.parse(list.r.stdout).entries.length > 0);
  assertNotLoaded(list, [...SERVICE_STACK, ...ON_DEMAND, 'picomatch'], 'mar list');
  const impl = list.own.filter((m) => /^src\/(pipeline|signing|config|keys|service|queue)\//.test(m));
  assert.deepEqual(impl, [], 'mar list loads the MAR library only');
});

/** Newest mtime under `dir` of files whose name ends with `ext`. */
function newest(dir: string, ext: string): number {
  let t = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) t = Math.max(t, newest(p, ext));
    else if (name.endsWith(ext)) t = Math.max(t, st.mtimeMs);
  }
  return t;
}

/** The compiled CLI (what `marsign` runs), when dist/ is built from the current sources. */
const DIST_SKIP = ((): string | undefined => {
  const main = join(PROJECT_ROOT, 'dist', 'src', 'cli', 'main.js');
  let built: number;
  try {
    built = statSync(main).mtimeMs;
  } catch {
    return 'skipped: dist/ not built (npm run build)';
  }
  return newest(join(PROJECT_ROOT, 'src'), '.ts') > built
    ? 'skipped: dist/ is older than src/ (npm run build)'
    : undefined;
})();

test(
  'the compiled CLI (bin/marsign.js) keeps --help and mar list as light',
  { skip: DIST_SKIP },
  async () => {
    const help = await loadedBy(['--help'], { dist: true });
    assert.equal(help.r.code, 0, help.r.stderr);
    assert.ok(help.own.includes('src/cli/main'), 'the recorder saw dist/src/cli/main.js');
    assertDefinitionsOnly(help, 'marsign --help (dist)');

    const list = await loadedBy(['mar', 'list', join(RELEASE, 'de', 'complete.mar')], { dist: true });
    assert.equal(list.r.code, 0, list.r.stderr);
    assert.match(list.r.stdout, /^SIZE +MODE +NAME/);
    assertNotLoaded(list, [...SERVICE_STACK, ...ON_DEMAND, 'picomatch'], 'mar list (dist)');
  },
);
