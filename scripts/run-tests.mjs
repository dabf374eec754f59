#!/usr/bin/env node
// Runs the test suite with node:test on the TypeScript sources (through tsx).
// Usage: node scripts/run-tests.mjs [--without-shared] [path-or-substring ...]
// Node 20's --test does not expand globs or find .ts files, so the files are listed here.
//
// --without-shared: only the test files that use ../shared or the PE corpus (directly or through a test
// helper they import), run as on a fresh clone without either: MARSIGN_HIDE_SHARED=1 and
// MARSIGN_PE_CORPUS=off, so every test that needs them must skip with its reason (also under CI=true).
// `.ci/run` runs this after the full suite.
//
// At the end, skipped tests are counted by reason (from a TAP copy of the run).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

// What marks a file as needing ../shared or the corpus; the modules that define these are not users.
const EXTERNAL = /\b(SHARED_SKIP|SHARED_DIR|PEER_MAR_DIR|peerMar|peCorpus)\b/;
const DEFINERS = new Set(['test/helpers/env.ts', 'test/helpers/pe-corpus.ts'].map((p) => resolve(p)));

/** Does `file`, or a project module outside src/ it imports (transitively), use ../shared or the corpus? */
function usesExternal(file, seen = new Set()) {
  if (seen.has(file)) return false;
  seen.add(file);
  const text = readFileSync(file, 'utf8');
  if (!DEFINERS.has(file) && EXTERNAL.test(text)) return true;
  for (const m of text.matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
    const target = resolve(dirname(file), m[1].replace(/\.js$/, '.ts'));
    const rel = relative(process.cwd(), target);
    if (rel.startsWith('src/') || rel.startsWith('..') || !existsSync(target)) continue;
    if (usesExternal(target, seen)) return true;
  }
  return false;
}

const args = process.argv.slice(2);
const withoutShared = args.includes('--without-shared');
const filters = args.filter((a) => a !== '--without-shared');
let files = walk('test').filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (withoutShared) files = files.filter((f) => usesExternal(resolve(f)));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}
const env = { ...process.env };
if (withoutShared) {
  env.MARSIGN_HIDE_SHARED = '1';
  env.MARSIGN_PE_CORPUS = 'off';
  console.log(`without ../shared and the PE corpus: ${files.length} test files\n  ${files.join('\n  ')}\n`);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const tapDir = mkdtempSync(join(tmpdir(), 'marsign-run-tests-'));
const tap = join(tapDir, 'run.tap');
// Signing commands append to an audit log (default under ~/.local/state): the suite's go to its own.
env.MARSIGN_AUDIT_LOG ??= join(tapDir, 'audit', 'audit.jsonl');
const r = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    `--test-concurrency=${concurrency}`,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files,
  ],
  { stdio: 'inherit', env },
);

// Skips by reason: `ok N - name # SKIP reason` in TAP (suites and tests alike).
const reasons = new Map();
for (const line of existsSync(tap) ? readFileSync(tap, 'utf8').split('\n') : []) {
  const m = /^\s*ok \d+ - .*? # SKIP ?(.*)$/.exec(line);
  if (m) reasons.set(m[1] || '(no reason given)', (reasons.get(m[1] || '(no reason given)') ?? 0) + 1);
}
rmSync(tapDir, { recursive: true, force: true });
const skipped = [...reasons.values()].reduce((a, b) => a + b, 0);
if (skipped > 0) {
  console.log(`\nskipped ${skipped} (tests and suites), by reason:`);
  for (const [reason, n] of [...reasons].sort((a, b) => b[1] - a[1])) console.log(`  ${n} × ${reason}`);
}
let status = r.status ?? 1;
if (withoutShared && status === 0 && ![...reasons.keys()].some((k) => k.includes('MARSIGN_HIDE_SHARED'))) {
  console.error('--without-shared: no test skipped for the hidden ../shared; the file selection is wrong');
  status = 1;
}
process.exit(status);
