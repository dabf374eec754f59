/** What `enqueue` and `status` share: config → Redis settings → the release queue, failing fast. */
import { dirname, resolve } from 'node:path';
import { cliClient } from '../audit/identity.js';
import type { LoadedConfig } from '../config/types.js';
import { UsageError } from '../errors.js';
import { BullReleaseQueue } from '../queue/bullmq.js';
import { assertRedisReachable, redisSettings } from '../queue/connection.js';
import { configuredRoots, validateRelease } from '../queue/manifest.js';
import type { ReleaseStatus, ResolvedRelease } from '../queue/types.js';
import { readReleaseRequest } from '../release/request.js';

/**
 * Who `marsign enqueue` records as the submitter: `cli:<user>` (the OS user). The CLI talks to Redis
 * directly, and Redis access is admin access: no client scope applies to it.
 */
export function cliSubmitter(): string {
  return cliClient();
}

export async function openQueue(config: LoadedConfig): Promise<BullReleaseQueue> {
  const settings = redisSettings(config);
  await assertRedisReachable(settings);
  return new BullReleaseQueue(settings);
}

/** Read and fully validate a release request file; `output` (from --output) overrides its top-level output. */
export async function loadRequestFile(
  config: LoadedConfig,
  path: string,
  output?: string,
): Promise<ResolvedRelease> {
  const abs = resolve(path);
  return validateRelease(await readReleaseRequest(abs), {
    profiles: Object.keys(config.file.profiles),
    roots: configuredRoots(config),
    baseDir: dirname(abs),
    ...(output !== undefined ? { output: resolve(output) } : {}),
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
