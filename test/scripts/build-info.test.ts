/**
 * scripts/build-info.mjs (run by `npm run build`): records the checkout's commit for `/__version__`, and
 * never fails the build or invents a value when there is no git checkout or no git at all.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

const SCRIPT = join(PROJECT_ROOT, 'scripts', 'build-info.mjs');
const dir = tempDir('marsign-build-info-');

function run(cwd: string, out: string, env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, [SCRIPT, '--out', out], { cwd, env, encoding: 'utf8' });
  return {
    code: r.status,
    stderr: r.stderr,
    info: JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>,
  };
}

const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: PROJECT_ROOT, encoding: 'utf8' });

test(
  'in a git checkout: the commit git reports',
  { skip: head.status === 0 ? false : 'the project is not a git checkout here (or git is missing)' },
  () => {
    const r = run(PROJECT_ROOT, join(dir, 'checkout.json'));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.info.commit, head.stdout.trim());
  },
);

test('not a git checkout: {} and exit 0', () => {
  const outside = tempDir('marsign-not-git-');
  const r = run(outside, join(dir, 'outside.json'), { ...process.env, GIT_CEILING_DIRECTORIES: outside });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.info, {});
});

test('git missing: {} and exit 0', () => {
  const r = run(PROJECT_ROOT, join(dir, 'no-git.json'), { ...process.env, PATH: join(dir, 'empty-path') });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.info, {});
});
