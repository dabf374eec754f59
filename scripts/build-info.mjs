#!/usr/bin/env node
// Records what `/__version__` reports about the build: the git commit (and the origin URL without
// credentials) of the checkout being built, into dist/build-info.json. Run by `npm run build` /
// `prepare` after tsc. Not a git checkout, or no git: the file says nothing it does not know (`{}`),
// and the build does not fail.
// Usage: node scripts/build-info.mjs [--out PATH]
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

const args = process.argv.slice(2);
const at = args.indexOf('--out');
const out = resolve(at >= 0 && args[at + 1] ? args[at + 1] : 'dist/build-info.json');

/** `git ARGS` in the cwd, or undefined when git is missing or fails (not a checkout). */
function git(...gitArgs) {
  const r = spawnSync('git', gitArgs, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

const info = {};
const commit = git('rev-parse', '--verify', 'HEAD');
if (commit && /^[0-9a-f]{40,64}$/.test(commit)) {
  info.commit = commit;
  // Uncommitted changes: the commit alone does not say what was built.
  if (git('status', '--porcelain', '--untracked-files=no')) info.dirty = true;
  const origin = git('config', '--get', 'remote.origin.url');
  if (origin) {
    try {
      const u = new URL(origin);
      if (u.protocol === 'https:' || u.protocol === 'http:') {
        u.username = '';
        u.password = '';
        info.source = u.toString().replace(/\.git$/, '');
      }
    } catch {
      // scp-like (git@host:path) or a local path: not a URL a reader can open; left out.
    }
  }
}
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify(info, null, 2) + '\n');
console.log(
  `build-info: ${out}: ${info.commit ? `commit ${info.commit}${info.dirty ? ' (dirty)' : ''}` : 'no git commit known'}`,
);
