/** What `enqueue` and `status` share: config → Redis settings → the release queue, failing fast. */
import { dirname, resolve } from 'node:path';
import { cliClient } from '../audit/identity.js';
import type { LoadedConfig } from '../config/types.js';
import { TransientError } from '../errors.js';
import type { ServiceErrorCode } from './errors.js';
import { BullReleaseQueue } from '../queue/bullmq.js';
import { assertRedisReachable, redisSettings } from '../queue/connection.js';
import { configuredRoots, validateRelease } from '../queue/manifest.js';
import { describePersistence, type RedisPersistence } from '../queue/redis-info.js';
import type { ReleaseStatus, ResolvedRelease } from '../queue/types.js';
import { readReleaseRequest } from '../release/request.js';

/**
 * Who `marsign enqueue` records as the submitter: `cli:<user>` (the OS user). The CLI talks to Redis
 * directly, and Redis access is admin access: no client scope applies to it.
 */
export function cliSubmitter(): string {
  return cliClient();
}

/** The queue on the config's Redis; without a config, $MARSIGN_REDIS_URL or redis://127.0.0.1:6379. */
export async function openQueue(config: LoadedConfig | undefined): Promise<BullReleaseQueue> {
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

/**
 * `marsign: warning: …` on stderr when the queue's Redis keeps nothing across a restart (enqueue and
 * status say so; stdout stays the command's output). Silent when persistence is on or the check fails.
 */
export async function warnIfNotPersistent(queue: BullReleaseQueue): Promise<void> {
  const server = await queue.server().catch(() => undefined);
  if (server?.persistence.state === 'off')
    process.stderr.write(
      `marsign: warning: Redis persistence is ${describePersistence(server.persistence)}: ` +
        'a restart of Redis loses every queued release\n',
    );
}

/**
 * Poll a release until it completes or fails; `onUpdate` sees every poll. The release exists when this
 * starts (it was just submitted), so its disappearance is a loss: RELEASE_LOST says whether Redis
 * restarted (its run id changed) and whether it persists data.
 */
export async function waitForRelease(
  queue: BullReleaseQueue,
  release: string,
  onUpdate: (s: ReleaseStatus) => void,
  pollMs = 500,
): Promise<ReleaseStatus> {
  const before = await queue.server().catch(() => undefined);
  let last: ReleaseStatus | undefined;
  for (;;) {
    const s = await queue.get(release);
    if (!s) throw await releaseLost(queue, release, before?.runId, last);
    last = s;
    onUpdate(s);
    if (s.state === 'completed' || s.state === 'failed') return s;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** The RELEASE_LOST error: what happened to Redis, what was done before, and how to go on. */
async function releaseLost(
  queue: BullReleaseQueue,
  release: string,
  runIdBefore: string | undefined,
  last: ReleaseStatus | undefined,
): Promise<TransientError> {
  const now = await queue.server().catch(() => undefined);
  const persistence: RedisPersistence = now?.persistence ?? { state: 'unknown', reason: 'unreachable' };
  const restarted =
    runIdBefore !== undefined && now?.runId !== undefined ? runIdBefore !== now.runId : undefined;
  const short = (id: string | undefined): string => (id ? id.slice(0, 8) : '?');
  const why =
    restarted === true
      ? `the Redis server restarted (run_id ${short(runIdBefore)}… → ${short(now?.runId)}…)`
      : restarted === false
        ? 'the Redis server did not restart, so the release was removed or the database flushed'
        : 'whether the Redis server restarted is unknown';
  const completed = (last?.locales ?? []).filter((l) => l.state === 'completed').map((l) => l.locale);
  const total = last?.locales.length;
  const progress =
    total === undefined
      ? 'no progress had been seen'
      : `${completed.length} of ${total} locales had completed` +
        (completed.length ? ` (${completed.join(', ')}; their outputs are in place)` : '');
  return new TransientError(
    'RELEASE_LOST' satisfies ServiceErrorCode,
    `Redis lost release ${JSON.stringify(release)}: ${why}, and its persistence is ` +
      `${describePersistence(persistence)}${persistence.state === 'off' ? ', so every job it held is gone' : ''}. ` +
      `${progress}. Submit the same release again (same id): outputs already written are served from ` +
      'the output cache.',
    {
      details: {
        release,
        ...(restarted !== undefined ? { restarted } : {}),
        persistence,
        completed,
        ...(total !== undefined ? { locales: total } : {}),
      },
    },
  );
}
