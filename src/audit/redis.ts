/**
 * The service's audit path (docs/ARCHITECTURE.md "Audit"): workers on any host append their records to
 * one Redis stream (`<prefix>:audit:records`, one XADD per record, a locale's records in one MULTI), and
 * one drainer — `marsign serve`, or `marsign audit drain` — moves them into the audit log, the log's
 * single writer, which chains them. The drainer reads through a consumer group and acknowledges (XACK +
 * XDEL) a batch only after the log's fsync, so a record leaves Redis only once it is on disk.
 *
 * Exactly one drainer runs at a time: it holds a lease (`<prefix>:audit:drainer`, SET NX PX, renewed);
 * another one waits on standby. A drainer that died after its fsync but before its XACK left its batch
 * pending: the next one compares the pending ids with the `sid`s at the end of the log and writes only
 * the missing ones. While no drainer runs, records wait in the stream; past `audit.maxBacklog` workers
 * start no new locale (AUDIT_BACKLOG, retried with backoff) rather than sign unaudited work.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { TransientError, toPlainError } from '../errors.js';
import type { Logger } from '../service/logger.js';
import type { AuditLog } from './log.js';
import type { AuditErrorCode, AuditEvent, AuditWriter } from './types.js';

export const DEFAULT_MAX_BACKLOG = 100_000;
export const DRAIN_DEFAULTS = { batch: 500, blockMs: 1_000, leaseMs: 15_000 } as const;
const GROUP = 'drain';
/** One consumer name: whichever drainer holds the lease reads (and recovers) the one pending list. */
const CONSUMER = 'drainer';

export function auditKeys(prefix: string): {
  stream: string;
  lease: string;
  state: string;
  rejected: string;
} {
  return {
    stream: `${prefix}:audit:records`,
    lease: `${prefix}:audit:drainer`,
    state: `${prefix}:audit:state`,
    rejected: `${prefix}:audit:rejected`,
  };
}

const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

/** A worker's writer: records into the stream; refuses new locales while the backlog is over its bound. */
export class RedisAuditQueue implements AuditWriter {
  private readonly keys: ReturnType<typeof auditKeys>;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly maxBacklog = DEFAULT_MAX_BACKLOG,
  ) {
    this.keys = auditKeys(prefix);
  }

  async ready(): Promise<void> {
    let backlog: number;
    try {
      backlog = await this.redis.xlen(this.keys.stream);
    } catch (e) {
      throw new TransientError(
        'AUDIT_QUEUE_FAILED' satisfies AuditErrorCode,
        `cannot read the audit stream: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    if (backlog >= this.maxBacklog)
      throw new TransientError(
        'AUDIT_BACKLOG' satisfies AuditErrorCode,
        `${backlog} audit records wait for the drainer (audit.maxBacklog ${this.maxBacklog}): is \`marsign serve\` or \`marsign audit drain\` running? This locale is retried later`,
        { details: { backlog, maxBacklog: this.maxBacklog } },
      );
  }

  async append(events: readonly AuditEvent[]): Promise<void> {
    if (events.length === 0) return;
    const m = this.redis.multi();
    for (const e of events) m.xadd(this.keys.stream, '*', 'r', JSON.stringify(e));
    let res: [Error | null, unknown][] | null;
    try {
      res = await m.exec();
    } catch (e) {
      throw new TransientError(
        'AUDIT_QUEUE_FAILED' satisfies AuditErrorCode,
        `cannot queue audit records: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    const failed = res?.find(([err]) => err) ?? (res ? undefined : [new Error('transaction discarded')]);
    if (failed)
      throw new TransientError(
        'AUDIT_QUEUE_FAILED' satisfies AuditErrorCode,
        `cannot queue audit records: ${failed[0]!.message}`,
      );
  }
}

export interface DrainerOptions {
  /** A connection of its own: the drainer blocks on it (XREADGROUP BLOCK). */
  redis: Redis;
  prefix: string;
  log: AuditLog;
  logger?: Logger;
  batch?: number;
  blockMs?: number;
  leaseMs?: number;
}

export interface DrainerStats {
  id: string;
  /** Whether this drainer holds the lease (else it is on standby). */
  active: boolean;
  drained: number;
  batches: number;
  /** Pending records found already in the log after a restart (acknowledged, not written again). */
  deduplicated: number;
  rejected: number;
  lastDrainAt?: string;
  lastError?: string;
}

type StreamEntry = [id: string, fields: string[] | null];

/** Moves the workers' records from the stream into the log (see the module comment). */
export class AuditDrainer {
  readonly stats: DrainerStats;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly keys: ReturnType<typeof auditKeys>;
  private readonly batch: number;
  private readonly blockMs: number;
  private readonly leaseMs: number;
  private leaseRenewedAt = 0;
  private wake: (() => void) | undefined;

  private constructor(private readonly o: DrainerOptions) {
    this.keys = auditKeys(o.prefix);
    this.batch = o.batch ?? DRAIN_DEFAULTS.batch;
    this.blockMs = o.blockMs ?? DRAIN_DEFAULTS.blockMs;
    this.leaseMs = o.leaseMs ?? DRAIN_DEFAULTS.leaseMs;
    this.stats = {
      id: `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
      active: false,
      drained: 0,
      batches: 0,
      deduplicated: 0,
      rejected: 0,
    };
  }

  static start(o: DrainerOptions): AuditDrainer {
    const d = new AuditDrainer(o);
    d.loop = d.run();
    return d;
  }

  /** Stop after the batch in hand (written and acknowledged), then give up the lease. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (!(await this.holdLease())) {
          await this.sleep(Math.min(this.leaseMs / 3, 2_000));
          continue;
        }
        await this.readBatch('>');
      } catch (e) {
        this.stats.lastError = `${toPlainError(e).code}: ${(e as Error).message}`;
        this.o.logger?.error({ err: toPlainError(e) }, 'audit drain failed; retrying');
        await this.sleep(1_000);
      }
    }
    if (this.stats.active)
      await this.o.redis.eval(RELEASE, 1, this.keys.lease, this.stats.id).catch(() => undefined);
    this.stats.active = false;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  /** Take or renew the lease; on taking it, recover what an earlier holder left pending. */
  private async holdLease(): Promise<boolean> {
    const r = this.o.redis;
    const now = Date.now();
    if (this.stats.active) {
      if (now - this.leaseRenewedAt < this.leaseMs / 3) return true;
      const ok = await r.eval(RENEW, 1, this.keys.lease, this.stats.id, String(this.leaseMs));
      if (ok === 1) {
        this.leaseRenewedAt = now;
        return true;
      }
      this.stats.active = false;
      this.o.logger?.warn({ drainer: this.stats.id }, 'audit drainer lost its lease; standing by');
      return false;
    }
    const got = await r.set(this.keys.lease, this.stats.id, 'PX', this.leaseMs, 'NX');
    if (got !== 'OK') return false;
    const holder = { id: this.stats.id, host: hostname(), pid: process.pid, log: this.o.log.path };
    await r.hset(this.keys.state, 'holder', JSON.stringify(holder), 'since', new Date().toISOString());
    this.stats.active = true;
    this.leaseRenewedAt = now;
    await r.xgroup('CREATE', this.keys.stream, GROUP, '0', 'MKSTREAM').catch((e: Error) => {
      if (!/BUSYGROUP/.test(e.message)) throw e;
    });
    this.o.logger?.info({ drainer: this.stats.id, log: this.o.log.path }, 'audit drainer active');
    // Records delivered to an earlier holder and never acknowledged: some may be in the log already.
    while (!this.stopped && (await this.readBatch('0', true)) > 0);
    return true;
  }

  /** Read and move one batch; `from` '>' = new records, '0' = this consumer's pending ones. */
  private async readBatch(from: '>' | '0', recovering = false): Promise<number> {
    const r = this.o.redis;
    const reply = (
      from === '>'
        ? await r.xreadgroup(
            'GROUP',
            GROUP,
            CONSUMER,
            'COUNT',
            this.batch,
            'BLOCK',
            this.blockMs,
            'STREAMS',
            this.keys.stream,
            '>',
          )
        : await r.xreadgroup('GROUP', GROUP, CONSUMER, 'COUNT', this.batch, 'STREAMS', this.keys.stream, '0')
    ) as [string, StreamEntry[]][] | null;
    const entries = reply?.[0]?.[1] ?? [];
    if (entries.length === 0) return 0;
    const present = recovering ? await this.o.log.recentSids() : new Set<string>();
    const events: AuditEvent[] = [];
    const rejected: StreamEntry[] = [];
    for (const [id, fields] of entries) {
      // A pending entry deleted meanwhile comes back without fields: nothing left to write.
      if (present.has(id) || fields === null) {
        this.stats.deduplicated++;
        continue;
      }
      const e = decode(fields);
      if (e) events.push({ ...e, sid: id });
      else rejected.push([id, fields]);
    }
    if (rejected.length) {
      // Not a record a worker wrote: kept aside for an operator, never dropped silently.
      const m = this.o.redis.multi();
      for (const [id, fields] of rejected) m.xadd(this.keys.rejected, '*', 'id', id, ...(fields ?? []));
      await m.exec();
      this.stats.rejected += rejected.length;
      this.o.logger?.error(
        { count: rejected.length },
        `audit stream entries that are not records moved to ${this.keys.rejected}`,
      );
    }
    await this.o.log.append(events);
    const ids = entries.map(([id]) => id);
    await this.o.redis
      .multi()
      .xack(this.keys.stream, GROUP, ...ids)
      .xdel(this.keys.stream, ...ids)
      .hset(this.keys.state, 'lastDrainAt', new Date().toISOString())
      .hincrby(this.keys.state, 'drained', events.length)
      .exec();
    this.stats.drained += events.length;
    this.stats.batches++;
    this.stats.lastDrainAt = new Date().toISOString();
    return entries.length;
  }
}

/** A stream entry's record, or undefined when it is not one. */
function decode(fields: string[]): AuditEvent | undefined {
  const i = fields.indexOf('r');
  if (i < 0 || i + 1 >= fields.length) return undefined;
  try {
    const e = JSON.parse(fields[i + 1]!) as AuditEvent;
    if (typeof e !== 'object' || e === null || typeof e.op !== 'string' || typeof e.outputSha256 !== 'string')
      return undefined;
    return e;
  } catch {
    return undefined;
  }
}

export interface AuditQueueStatus {
  /** Records waiting in Redis (not yet in the log). */
  backlog: number;
  maxBacklog: number;
  /** The drainer holding the lease, or null when none runs. */
  drainer: { id: string } | null;
  /** The last drainer to hold the lease (host, pid, log). */
  lastHolder?: Record<string, unknown>;
  lastDrainAt?: string;
  drained: number;
  /** Stream entries that were not records, kept in `<prefix>:audit:rejected`. */
  rejected: number;
}

export async function auditQueueStatus(
  redis: Redis,
  prefix: string,
  maxBacklog = DEFAULT_MAX_BACKLOG,
): Promise<AuditQueueStatus> {
  const k = auditKeys(prefix);
  const [backlog, lease, state, rejected] = await Promise.all([
    redis.xlen(k.stream),
    redis.get(k.lease),
    redis.hgetall(k.state),
    redis.xlen(k.rejected),
  ]);
  let lastHolder: Record<string, unknown> | undefined;
  try {
    lastHolder = state.holder ? (JSON.parse(state.holder) as Record<string, unknown>) : undefined;
  } catch {
    lastHolder = undefined;
  }
  return {
    backlog,
    maxBacklog,
    drainer: lease ? { id: lease } : null,
    ...(lastHolder ? { lastHolder } : {}),
    ...(state.lastDrainAt ? { lastDrainAt: state.lastDrainAt } : {}),
    drained: Number(state.drained ?? 0),
    rejected,
  };
}
