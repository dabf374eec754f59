/** What `enqueue` and `status` share: config → Redis settings → the release queue, failing fast. */
import { readFile, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { LoadedConfig } from '../config/types.js';
import { UsageError } from '../errors.js';
import { BullReleaseQueue } from '../queue/bullmq.js';
import { assertRedisReachable, redisSettings } from '../queue/connection.js';
import { checkMarFile, configuredRoots, validateManifest } from '../queue/manifest.js';
import type { ReleaseManifest, ReleaseStatus } from '../queue/types.js';

export const MAX_MANIFEST_BYTES = 1024 * 1024;

/**
 * Who `marsign enqueue` records as the submitter: `cli:<user>` (the OS user). The CLI talks to Redis
 * directly, and Redis access is admin access: no client scope applies to it.
 */
export function cliSubmitter(): string {
  let user: string | undefined;
  try {
    user = userInfo().username;
  } catch {
    user = process.env.USER ?? process.env.LOGNAME;
  }
  const clean = (user ?? '').replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  return `cli:${clean || `uid-${process.getuid?.() ?? 'unknown'}`}`;
}

export async function openQueue(config: LoadedConfig): Promise<BullReleaseQueue> {
  const settings = redisSettings(config);
  await assertRedisReachable(settings);
  return new BullReleaseQueue(settings);
}

/** Read and fully validate a release manifest file; `output` (from --output) overrides its top-level output. */
export async function loadManifestFile(
  config: LoadedConfig,
  path: string,
  output?: string,
): Promise<ReleaseManifest> {
  const abs = resolve(path);
  let text: string;
  try {
    const st = await stat(abs);
    if (st.size > MAX_MANIFEST_BYTES) {
      throw new UsageError('MANIFEST_TOO_LARGE', `${abs} is ${st.size} bytes (limit ${MAX_MANIFEST_BYTES})`);
    }
    text = await readFile(abs, 'utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(
      'MANIFEST_NOT_FOUND',
      `release manifest ${abs} cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new UsageError('MANIFEST_SCHEMA', `${abs} is not valid JSON: ${(e as Error).message}`);
  }
  if (output !== undefined && typeof doc === 'object' && doc !== null && !Array.isArray(doc)) {
    (doc as Record<string, unknown>).output = resolve(output);
  }
  return validateManifest(doc, {
    profiles: Object.keys(config.file.profiles),
    roots: configuredRoots(config),
    baseDir: dirname(abs),
    checkMar: checkMarFile,
  });
}

/** Poll a release until it completes or fails; `onUpdate` sees every poll. */
export async function waitForRelease(
  queue: BullReleaseQueue,
  release: string,
  onUpdate: (s: ReleaseStatus) => void,
  pollMs = 500,
): Promise<ReleaseStatus> {
  for (;;) {
    const s = await queue.get(release);
    if (!s) throw new UsageError('RELEASE_NOT_FOUND', `no release ${JSON.stringify(release)} in the queue`);
    onUpdate(s);
    if (s.state === 'completed' || s.state === 'failed') return s;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
