/**
 * The release queue on BullMQ: one flow per release (parent job in `releases`, one child per locale in
 * `locales`). Only this folder imports bullmq; the pipeline never sees it.
 */
import { stat } from 'node:fs/promises';
import { FlowProducer, Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { PlainError } from '../errors.js';
import { bullConnection, type RedisSettings } from './connection.js';
import { estimateEtaMs, type EtaLocale } from './eta.js';
import { readHeartbeats, type WorkerHeartbeat } from './heartbeat.js';
import { redisPersistence, redisRunId, type RedisPersistence } from './redis-info.js';
import type {
  LocaleJobData,
  LocaleJobProgress,
  LocaleJobResult,
  LocaleState,
  LocaleStatus,
  ListOptions,
  ReleaseJobData,
  ReleaseJobResult,
  ResolvedRelease,
  ReleaseQueue,
  ReleaseState,
  ReleaseStatus,
  SubmitOptions,
  SubmitResult,
} from './types.js';

export const RELEASES_QUEUE = 'releases';
export const LOCALES_QUEUE = 'locales';

export interface RetryPolicy {
  /** Total tries for a transient failure (I/O, Redis, timestamp authority). */
  attempts: number;
  /** First backoff delay; doubles each retry (BullMQ exponential backoff). */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, backoffMs: 2_000 };

/**
 * Per-submitter index of release ids (a sorted set scored by submit time), so a client's own releases
 * are listed without scanning everyone's. The job data's `client` stays the truth: the index may hold
 * ids whose job was removed (pruned when listed) or lost a submit race (filtered out).
 */
export function clientIndexKey(prefix: string, client: string): string {
  return `${prefix}:client-releases:${client}`;
}

/** How many index entries a filtered list reads per round trip. */
const LIST_PAGE = 50;

/** BullMQ rejects ':' in custom job ids, so `release@locale` stands for `release:locale`. */
export function localeJobId(release: string, locale: string): string {
  return `${release}@${locale}`;
}

export function localeJobOptions(release: string, locale: string, retry: RetryPolicy): JobsOptions {
  return {
    jobId: localeJobId(release, locale),
    attempts: retry.attempts,
    backoff: { type: 'exponential', delay: retry.backoffMs },
    // A locale that fails for good fails its release at once, visibly (parent → failed).
    failParentOnFailure: true,
    removeOnComplete: false,
    removeOnFail: false,
  };
}

/** Parse `CODE: message` (how the processor words a failure) back into a plain error. */
export function errorFromFailedReason(reason: string | undefined): PlainError | undefined {
  if (!reason) return undefined;
  const m = /^([A-Z][A-Z0-9_]+): ([\s\S]*)$/.exec(reason);
  if (m) return { name: 'Error', code: m[1]!, message: m[2]! };
  return { name: 'Error', code: 'INTERNAL', message: reason };
}

function iso(ms: number | undefined): string | undefined {
  return ms ? new Date(ms).toISOString() : undefined;
}

/** Times a worker started the job: BullMQ counts each move to active (`ats`), a stalled re-run too. */
export function jobStarts(job: Pick<Job, 'attemptsStarted' | 'attemptsMade'>): number {
  return Math.max(job.attemptsStarted ?? 0, job.attemptsMade);
}

/** A queued locale's input size (best effort: the ETA is left out when it is not known). */
async function inputSize(path: string): Promise<number | undefined> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : undefined;
  } catch {
    return undefined;
  }
}

function localeState(state: string, job: Job): LocaleState {
  switch (state) {
    case 'completed':
      return 'completed';
    case 'failed':
      return 'failed';
    case 'active':
      return 'active';
    case 'delayed':
      return job.attemptsMade > 0 ? 'retrying' : 'queued';
    case 'waiting':
    case 'prioritized':
    case 'waiting-children':
      return job.attemptsMade > 0 ? 'retrying' : 'queued';
    default:
      return 'unknown';
  }
}

export class BullReleaseQueue implements ReleaseQueue {
  readonly releases: Queue<ReleaseJobData, ReleaseJobResult>;
  readonly locales: Queue<LocaleJobData, LocaleJobResult>;
  private readonly flows: FlowProducer;

  constructor(
    readonly settings: RedisSettings,
    private readonly retry: RetryPolicy = DEFAULT_RETRY,
    /** Connection errors (Redis down or restarting); BullMQ reconnects by itself. */
    onError: (err: Error) => void = () => undefined,
  ) {
    const connection = bullConnection(settings);
    this.releases = new Queue(RELEASES_QUEUE, { connection, prefix: settings.prefix });
    this.locales = new Queue(LOCALES_QUEUE, { connection, prefix: settings.prefix });
    this.flows = new FlowProducer({ connection, prefix: settings.prefix });
    this.releases.on('error', onError);
    this.locales.on('error', onError);
    this.flows.on('error', onError);
  }

  async submit(manifest: ResolvedRelease, options: SubmitOptions): Promise<SubmitResult> {
    const { client } = options;
    const locales = manifest.locales.map((l) => l.locale);
    const taken = (job: Job<ReleaseJobData, ReleaseJobResult>): SubmitResult => {
      const r: SubmitResult = { release: manifest.release, created: false, locales: job.data.locales };
      if (job.data.client !== undefined) r.client = job.data.client;
      return r;
    };
    const existing = await this.releases.getJob(manifest.release);
    if (existing) return taken(existing);
    const submittedAt = new Date().toISOString();
    const sizes = await Promise.all(manifest.locales.map((l) => (l.recipe ? undefined : inputSize(l.input))));
    const redis = await this.redis();
    await redis.zadd(clientIndexKey(this.settings.prefix, client), Date.now(), manifest.release);
    await this.flows.add({
      name: 'release',
      queueName: RELEASES_QUEUE,
      data: {
        release: manifest.release,
        profile: manifest.profile,
        locales,
        submittedAt,
        client,
      } satisfies ReleaseJobData,
      opts: { jobId: manifest.release, removeOnComplete: false, removeOnFail: false },
      children: manifest.locales.map((l, i) => ({
        name: 'locale',
        queueName: LOCALES_QUEUE,
        data: {
          release: manifest.release,
          locale: l.locale,
          profile: manifest.profile,
          input: l.input,
          output: l.output,
          client,
          ...(l.recipe ? { recipe: l.recipe } : {}),
          ...(sizes[i] !== undefined ? { inputBytes: sizes[i] } : {}),
        } satisfies LocaleJobData,
        opts: localeJobOptions(manifest.release, l.locale, this.retry),
      })),
    });
    // A concurrent submit of the same id may have won (BullMQ keeps the first job of an id).
    const stored = await this.releases.getJob(manifest.release);
    if (stored && (stored.data.client !== client || stored.data.submittedAt !== submittedAt))
      return taken(stored);
    return { release: manifest.release, created: true, locales, client };
  }

  /** The releases queue's own connection (BullMQ's Redis backend is an ioredis client). */
  private async redis(): Promise<Redis> {
    return (await this.releases.getBackend().client) as unknown as Redis;
  }

  /** The Redis server behind the queue: its run id (changes on restart) and whether it persists data. */
  async server(): Promise<{ runId: string | undefined; persistence: RedisPersistence }> {
    const redis = await this.redis();
    const [runId, persistence] = await Promise.all([redisRunId(redis), redisPersistence(redis)]);
    return { runId, persistence };
  }

  async get(release: string): Promise<ReleaseStatus | undefined> {
    const parent = await this.releases.getJob(release);
    if (!parent) return undefined;
    return this.statusOf(parent, await this.heartbeatsById());
  }

  async workers(): Promise<WorkerHeartbeat[]> {
    return readHeartbeats(await this.redis(), this.settings.prefix);
  }

  private async heartbeatsById(): Promise<Map<string, WorkerHeartbeat>> {
    return new Map((await this.workers()).map((h) => [h.id, h]));
  }

  async list(options: ListOptions = {}): Promise<ReleaseStatus[]> {
    const limit = options.limit ?? 20;
    if (options.client !== undefined) return this.listOf(options.client, limit);
    const jobs = await this.releases.getJobs(
      ['waiting-children', 'waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'],
      0,
      limit * 2,
    );
    jobs.sort((a, b) => b.timestamp - a.timestamp);
    const beats = await this.heartbeatsById();
    const out: ReleaseStatus[] = [];
    for (const j of jobs.slice(0, limit)) if (j) out.push(await this.statusOf(j, beats));
    return out;
  }

  /** A submitter's newest releases, from its index. */
  private async listOf(client: string, limit: number): Promise<ReleaseStatus[]> {
    const redis = await this.redis();
    const key = clientIndexKey(this.settings.prefix, client);
    const out: ReleaseStatus[] = [];
    const gone: string[] = [];
    const beats = await this.heartbeatsById();
    for (let start = 0; out.length < limit; start += LIST_PAGE) {
      const ids = await redis.zrevrange(key, start, start + LIST_PAGE - 1);
      const jobs = await Promise.all(ids.map((id) => this.releases.getJob(id)));
      jobs.forEach((j, i) => {
        if (!j) gone.push(ids[i]!);
      });
      for (const j of jobs) {
        if (out.length >= limit) break;
        if (j && j.data.client === client) out.push(await this.statusOf(j, beats));
      }
      if (ids.length < LIST_PAGE) break;
    }
    if (gone.length > 0) await redis.zrem(key, ...gone);
    return out;
  }

  async counts(): Promise<Record<'releases' | 'locales', Record<string, number>>> {
    const [releases, locales] = await Promise.all([
      this.releases.getJobCounts(),
      this.locales.getJobCounts(),
    ]);
    return { releases, locales };
  }

  private async localeStatus(
    release: string,
    locale: string,
    beats: Map<string, WorkerHeartbeat>,
  ): Promise<{ status: LocaleStatus; inputBytes?: number }> {
    const jobId = localeJobId(release, locale);
    let job = await this.locales.getJob(jobId);
    if (!job) {
      return {
        status: { locale, jobId, state: 'unknown', input: '', output: '', attempts: 0, progress: {} },
      };
    }
    let raw = await job.getState();
    // The job finished between reading it and reading its state: read it again, else a completed
    // locale is reported without its result (a remote client saw REMOTE_NO_OUTPUT).
    if (raw === 'completed' && job.returnvalue == null) {
      job = (await this.locales.getJob(jobId)) ?? job;
      raw = await job.getState();
    }
    let state = localeState(raw, job);
    // Active in BullMQ, but its worker went silent (killed, frozen, cut off): stalled until BullMQ's
    // stalled-job check moves it. A worker without a heartbeat (older version) is not judged.
    const beat = job.processedBy ? beats.get(job.processedBy) : undefined;
    if (state === 'active' && beat && beat.state !== 'alive') state = 'stalled';
    const progress: LocaleJobProgress =
      typeof job.progress === 'object' && job.progress !== null ? (job.progress as LocaleJobProgress) : {};
    const s: LocaleStatus = {
      locale,
      jobId,
      state,
      input: job.data.input,
      output: job.data.output,
      attempts: jobStarts(job),
      progress,
    };
    if (job.stalledCounter) s.stalls = job.stalledCounter;
    if (state === 'completed' && job.returnvalue) s.result = job.returnvalue;
    if (job.failedReason && state !== 'completed') {
      s.error = progress.error ?? errorFromFailedReason(job.failedReason);
    }
    const started = job.processedOn;
    if (started) s.startedAt = iso(started)!;
    if (job.finishedOn && (state === 'completed' || state === 'failed')) {
      s.finishedAt = iso(job.finishedOn)!;
      if (started) s.durationMs = job.finishedOn - started;
    } else if (started && (state === 'active' || state === 'stalled')) {
      s.durationMs = Date.now() - started;
    }
    const worker = s.result?.worker ?? job.processedBy;
    if (worker) s.worker = worker;
    if (beat && (state === 'active' || state === 'stalled')) s.workerSeenMs = beat.ageMs;
    return { status: s, ...(job.data.inputBytes !== undefined ? { inputBytes: job.data.inputBytes } : {}) };
  }

  private async statusOf(
    parent: Job<ReleaseJobData, ReleaseJobResult>,
    beats: Map<string, WorkerHeartbeat>,
  ): Promise<ReleaseStatus> {
    const data = parent.data;
    const parentState = await parent.getState();
    const found = await Promise.all(data.locales.map((l) => this.localeStatus(data.release, l, beats)));
    const locales = found.map((f) => f.status);
    const now = Date.now();
    const eta: EtaLocale[] = found.map(({ status: l, inputBytes }) => ({
      state: l.state,
      bytesDone: l.result ? l.result.inputBytes : (l.progress.bytesDone ?? 0),
      bytesTotal: l.result?.inputBytes ?? l.progress.bytesTotal ?? inputBytes,
      elapsedMs: l.result ? l.durationMs : l.startedAt ? now - Date.parse(l.startedAt) : undefined,
    }));
    const totals = {
      locales: locales.length,
      completed: 0,
      failed: 0,
      active: 0,
      entriesDone: 0,
      entriesTotal: 0,
      bytesDone: 0,
      bytesTotal: 0,
      hits: 0,
      misses: 0,
      hitRate: null as number | null,
    };
    let lastFinish = 0;
    for (const l of locales) {
      if (l.state === 'completed') totals.completed++;
      else if (l.state === 'failed') totals.failed++;
      else if (l.state === 'active') totals.active++;
      const p = l.progress;
      if (l.result) {
        totals.entriesDone += l.result.entries;
        totals.entriesTotal += l.result.entries;
        totals.bytesDone += l.result.inputBytes;
        totals.bytesTotal += l.result.inputBytes;
        totals.hits += l.result.hits;
        totals.misses += l.result.misses;
      } else {
        totals.entriesDone += p.entriesDone ?? 0;
        totals.entriesTotal += p.entriesTotal ?? 0;
        totals.bytesDone += p.bytesDone ?? 0;
        totals.bytesTotal += p.bytesTotal ?? 0;
        totals.hits += p.hits ?? 0;
        totals.misses += p.misses ?? 0;
      }
      if (l.finishedAt) lastFinish = Math.max(lastFinish, Date.parse(l.finishedAt));
    }
    if (totals.hits + totals.misses > 0) totals.hitRate = totals.hits / (totals.hits + totals.misses);

    const failedLocale = locales.find((l) => l.state === 'failed');
    let state: ReleaseState;
    if (parentState === 'completed') state = 'completed';
    else if (parentState === 'failed' || failedLocale) state = 'failed';
    else if (parentState === 'unknown') state = 'unknown';
    else if (locales.some((l) => l.state !== 'queued')) state = 'running';
    else state = 'queued';

    const status: ReleaseStatus = {
      release: data.release,
      profile: data.profile,
      ...(data.client !== undefined ? { client: data.client } : {}),
      state,
      submittedAt: data.submittedAt,
      locales,
      totals,
      etaMs: null,
    };
    const err =
      failedLocale?.error ??
      (parentState === 'failed' ? errorFromFailedReason(parent.failedReason) : undefined);
    if (err)
      status.error = failedLocale
        ? { ...err, details: { ...err.details, locale: failedLocale.locale } }
        : err;
    if (state === 'completed' || state === 'failed') {
      const end = parent.finishedOn ?? (lastFinish || undefined);
      if (end) {
        status.finishedAt = iso(end)!;
        status.durationMs = end - Date.parse(data.submittedAt);
      }
    } else if (state === 'running') {
      status.etaMs = estimateEtaMs(eta);
    }
    return status;
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.flows.close(), this.releases.close(), this.locales.close()]);
  }
}
