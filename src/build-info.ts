/**
 * What `/__version__` says about the build (Dockerflow): only what is known. Compiled code reads
 * dist/build-info.json, written by scripts/build-info.mjs when `npm run build` ran (the commit dist/ was
 * built from); from sources (tsx) the checkout is asked at first use, since its HEAD is what runs.
 * A deploy may set MARSIGN_COMMIT / MARSIGN_SOURCE / MARSIGN_BUILD instead. Unknown fields are absent.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FROM_SOURCE, PROJECT_ROOT } from './version.js';

export interface BuildInfo {
  commit?: string;
  /** The checkout had uncommitted changes to tracked files: the commit alone does not say what runs. */
  dirty?: boolean;
  source?: string;
  build?: string;
}

let cached: BuildInfo | undefined;

export function buildInfo(env: NodeJS.ProcessEnv = process.env): BuildInfo {
  cached ??= FROM_SOURCE ? fromCheckout() : fromFile();
  const out: BuildInfo = { ...cached };
  if (env.MARSIGN_COMMIT) {
    out.commit = env.MARSIGN_COMMIT;
    delete out.dirty;
  }
  if (env.MARSIGN_SOURCE) out.source = env.MARSIGN_SOURCE;
  if (env.MARSIGN_BUILD) out.build = env.MARSIGN_BUILD;
  return out;
}

function fromFile(): BuildInfo {
  try {
    const doc = JSON.parse(readFileSync(join(PROJECT_ROOT, 'dist', 'build-info.json'), 'utf8')) as BuildInfo;
    return {
      ...(typeof doc.commit === 'string' ? { commit: doc.commit } : {}),
      ...(doc.dirty === true ? { dirty: true } : {}),
      ...(typeof doc.source === 'string' ? { source: doc.source } : {}),
    };
  } catch {
    return {};
  }
}

function fromCheckout(): BuildInfo {
  const git = (...args: string[]): string | undefined => {
    const r = spawnSync('git', args, {
      cwd: PROJECT_ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return r.status === 0 ? r.stdout.trim() : undefined;
  };
  const commit = git('rev-parse', '--verify', 'HEAD');
  if (!commit || !/^[0-9a-f]{40,64}$/.test(commit)) return {};
  return { commit, ...(git('status', '--porcelain', '--untracked-files=no') ? { dirty: true } : {}) };
}
