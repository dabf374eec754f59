import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { FoundRecord } from '../../audit/find.js';
import type { AuditErrorCode } from '../../audit/types.js';
import type { VerifyReport } from '../../audit/verify.js';
import type { LoadedConfig } from '../../config/types.js';
import { CodedError, UsageError } from '../../errors.js';
import { emit, EXIT, handler } from '../output.js';

interface CommonArgs {
  json?: boolean;
  config?: string;
  log?: string;
}

function withCommon<T>(y: Argv<T>): Argv<T & CommonArgs> {
  return y
    .option('config', {
      alias: 'c',
      type: 'string',
      describe: 'config file for audit.log (default: $MARSIGN_CONFIG, else ./marsign.config.json if present)',
    })
    .option('log', {
      type: 'string',
      describe:
        "audit log (default: the config's audit.log, else $MARSIGN_AUDIT_LOG, else $XDG_STATE_HOME/marsign/audit.jsonl or ~/.local/state/marsign/audit.jsonl)",
    })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document' });
}

/** The config is optional for the audit commands: used when named or present in the cwd. */
async function configOf(argv: { config?: string }): Promise<LoadedConfig | undefined> {
  const { loadConfig, CONFIG_FILENAME } = await import('../../config/index.js');
  if (argv.config || process.env.MARSIGN_CONFIG || existsSync(CONFIG_FILENAME))
    return loadConfig(argv.config);
  return undefined;
}

async function logOf(argv: CommonArgs): Promise<string> {
  if (argv.log) return argv.log;
  const { auditLogPath } = await import('../../audit/log.js');
  return auditLogPath(await configOf(argv));
}

type VerifyArgs = { json?: boolean; logs: string[] };

const verify: CommandModule<object, VerifyArgs> = {
  command: 'verify <logs..>',
  describe:
    "Re-hash an audit log's chain: exit 0 when intact, 1 naming the first bad line (edited, missing, reordered, truncated)",
  builder: (y) =>
    y
      .positional('logs', { type: 'string', array: true, demandOption: true, describe: 'audit log file(s)' })
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document' }) as never,
  handler: handler<VerifyArgs>(async (argv) => {
    const { verifyLog } = await import('../../audit/verify.js');
    const reports: VerifyReport[] = [];
    for (const log of argv.logs) {
      if (!existsSync(log))
        throw new CodedError('AUDIT_LOG_UNREADABLE' satisfies AuditErrorCode, `${log}: no such audit log`, {
          details: { log },
        });
      try {
        reports.push(await verifyLog(log));
      } catch (e) {
        throw new CodedError('AUDIT_LOG_UNREADABLE' satisfies AuditErrorCode, (e as Error).message, {
          cause: e,
          details: { log },
        });
      }
    }
    const ok = reports.every((r) => r.ok);
    emit(argv, { ok, logs: reports }, (v) => v.logs.map(renderVerify).join('\n'));
    for (const r of reports)
      if (r.problem)
        process.stderr.write(
          `marsign: AUDIT_CHAIN_BROKEN: ${r.log} line ${r.problem.line}: ${r.problem.reason}\n`,
        );
    if (!ok) process.exitCode = EXIT.INVALID;
  }),
};

function renderVerify(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.problem)
    lines.push(`${r.log}: BROKEN at line ${r.problem.line} (${r.problem.kind}): ${r.problem.reason}`);
  else
    lines.push(
      `${r.log}: ok — ${r.lines} records, seq ${r.firstSeq}..${r.lastSeq}, head ${r.head.status}` +
        (r.predecessor.log ? `, continues ${r.predecessor.log} (${r.predecessor.status})` : ', a new chain'),
    );
  for (const n of r.notChecked) lines.push(`  not checked: ${n}`);
  return lines.join('\n');
}

type FindArgs = CommonArgs & { sha256?: string; release?: string; all?: boolean; logs?: string[] };

const find: CommandModule<object, FindArgs> = {
  command: 'find [logs..]',
  describe:
    "Which release, locale, key and client produced a binary (--sha256 of an entry's stored bytes or a whole MAR), or every record of a release (exit 1 when none)",
  builder: (y) =>
    withCommon(y)
      .positional('logs', {
        type: 'string',
        array: true,
        describe: "audit log file(s) (default: --log / the config's)",
      })
      .option('sha256', {
        type: 'string',
        describe: 'hex sha256 of an input or output (entry or whole file)',
      })
      .option('release', { type: 'string', describe: 'release id' })
      .option('all', {
        type: 'boolean',
        default: false,
        describe: 'also search the rotated logs the log continues (its predecessors beside it)',
      }) as never,
  handler: handler<FindArgs>(async (argv) => {
    if ((argv.sha256 === undefined) === (argv.release === undefined))
      throw new UsageError(
        'AUDIT_BAD_QUERY' satisfies AuditErrorCode,
        'give exactly one of --sha256 HEX or --release ID',
      );
    if (argv.sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(argv.sha256))
      throw new UsageError(
        'AUDIT_BAD_QUERY' satisfies AuditErrorCode,
        `--sha256 must be 64 hex digits, got ${argv.sha256.length} characters`,
      );
    const { findRecords } = await import('../../audit/find.js');
    let logs = argv.logs?.length ? argv.logs : [await logOf(argv)];
    if (argv.all) logs = (await Promise.all(logs.map(predecessors))).flat();
    for (const l of logs)
      if (!existsSync(l))
        throw new CodedError('AUDIT_LOG_UNREADABLE' satisfies AuditErrorCode, `${l}: no such audit log`, {
          details: { log: l },
        });
    const found = await findRecords(logs, {
      ...(argv.sha256 !== undefined ? { sha256: argv.sha256 } : {}),
      ...(argv.release !== undefined ? { release: argv.release } : {}),
    });
    emit(argv, { logs, count: found.length, records: found }, (v) => renderFound(v.records));
    if (found.length === 0) process.exitCode = EXIT.INVALID;
  }),
};

/** The log and the rotated logs it continues (oldest first), as far as they are beside it. */
async function predecessors(log: string): Promise<string[]> {
  const { readLines } = await import('../../audit/lines.js');
  const { parseRecord } = await import('../../audit/record.js');
  const chain = [log];
  const seen = new Set([basename(log)]);
  for (let cur = log; ;) {
    let prevLog: string | null = null;
    for await (const l of readLines(cur)) {
      const r = parseRecord(l.bytes.toString('utf8'));
      if (typeof r !== 'string' && r.op === 'log-start') prevLog = r.prevLog;
      break;
    }
    if (!prevLog || seen.has(prevLog)) break;
    const p = join(dirname(cur), basename(prevLog));
    if (!existsSync(p)) break;
    seen.add(prevLog);
    chain.unshift(p);
    cur = p;
  }
  return chain;
}

function renderFound(found: FoundRecord[]): string {
  if (found.length === 0) return 'no record';
  return found
    .map(({ log, line, record: r, matched }) => {
      const what = r.entry
        ? `entry ${r.entry} in a ${r.container}`
        : `${r.op === 'mar' ? 'MAR signature of' : 'whole'} ${r.container} ${r.output ?? ''}`;
      const keys = r.keys.map((k) => (k.uri ? `${k.id.slice(0, 16)}… (${k.uri})` : `${k.id.slice(0, 16)}…`));
      return [
        `${basename(log)}:${line}  ${r.time}  ${r.op} ${r.action} (cache ${r.cache})${matched ? ` — the ${matched} digest` : ''}`,
        `  release ${r.release ?? '-'}  locale ${r.locale ?? '-'}  client ${r.client ?? '-'}  host ${r.host}`,
        `  ${what}`,
        `  profile ${r.profile}  key ${keys.join(', ') || '-'}  tsa ${r.tsa ?? '-'}`,
      ].join('\n');
    })
    .join('\n');
}

const rotate: CommandModule<object, CommonArgs> = {
  command: 'rotate',
  describe:
    'Start a new audit log file that continues the chain (the old one is renamed beside it); also recovers a log whose last line was torn',
  builder: (y) => withCommon(y) as never,
  handler: handler<CommonArgs>(async (argv) => {
    const { AuditLog } = await import('../../audit/log.js');
    const path = await logOf(argv);
    const r = await (await AuditLog.open(path, { probe: false })).rotate();
    emit(
      argv,
      { ok: true, log: path, rotatedTo: r.rotatedTo, lastSeq: r.seq },
      (v) => `rotated ${v.log} -> ${v.rotatedTo} (last seq ${v.lastSeq}); ${v.log} continues the chain`,
    );
  }),
};

const drain: CommandModule<object, CommonArgs> = {
  command: 'drain',
  describe:
    "Move the service workers' audit records from Redis into the audit log until SIGTERM (one drainer runs at a time; `marsign serve` drains too unless audit.drain is false)",
  builder: (y) => withCommon(y) as never,
  handler: handler<CommonArgs>(async (argv) => {
    const { loadConfig } = await import('../../config/index.js');
    const { startAuditDrain } = await import('../../audit/index.js');
    const { createLogger } = await import('../../service/logger.js');
    const config = await loadConfig(argv.config);
    if (argv.log) config.file.audit = { ...config.file.audit, log: argv.log };
    const logger = createLogger({ name: 'marsign-audit-drain' });
    const d = await startAuditDrain(config, logger);
    logger.info({ log: d.log.path, drainer: d.drainer.stats.id }, 'audit drain started');
    await new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        logger.info({ signal: sig }, 'audit drain stopping');
        d.stop().then(resolve, resolve);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    logger.info({ drained: d.drainer.stats.drained }, 'audit drain stopped');
    setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
  }),
};

const status: CommandModule<object, CommonArgs & { redis?: boolean }> = {
  command: 'status',
  describe:
    "The audit log's head and size; with the service (a redis section, or --redis): records waiting in Redis and the drainer",
  builder: (y) =>
    withCommon(y).option('redis', {
      type: 'boolean',
      describe: "also report the service's stream (default: when the config has a redis section)",
    }) as never,
  handler: handler<CommonArgs & { redis?: boolean }>(async (argv) => {
    const { readHead } = await import('../../audit/log.js');
    const { stat } = await import('node:fs/promises');
    const config = await configOf(argv);
    const path = argv.log ?? (await logOf(argv));
    const size = await stat(path).then(
      (s) => s.size,
      () => null,
    );
    const head = await readHead(path).catch(() => null);
    const out: Record<string, unknown> = { log: path, size, head: head ?? null };
    if (argv.redis ?? config?.file.redis !== undefined) {
      const { createRedis, redisSettings, assertRedisReachable } = await import('../../queue/connection.js');
      const { auditQueueStatus } = await import('../../audit/redis.js');
      const settings = redisSettings(config);
      await assertRedisReachable(settings);
      const redis = createRedis(settings);
      try {
        out.service = await auditQueueStatus(redis, settings.prefix, config?.file.audit?.maxBacklog);
      } finally {
        await redis.quit().catch(() => redis.disconnect());
      }
    }
    emit(argv, out, (v) => {
      const lines = [
        `log:     ${v.log} (${v.size === null ? 'absent' : `${v.size} bytes`})`,
        `head:    ${head ? `seq ${head.seq} at ${head.time}` : 'none'}`,
      ];
      const s = v.service as
        | {
            backlog: number;
            maxBacklog: number;
            drainer: { id: string } | null;
            lastDrainAt?: string;
            rejected: number;
          }
        | undefined;
      if (s)
        lines.push(
          `backlog: ${s.backlog} records waiting in Redis (bound ${s.maxBacklog})`,
          `drainer: ${s.drainer ? s.drainer.id : 'NONE RUNNING'}${s.lastDrainAt ? `, last drained ${s.lastDrainAt}` : ''}`,
          ...(s.rejected ? [`rejected: ${s.rejected} stream entries that were not records`] : []),
        );
      return lines.join('\n');
    });
  }),
};

export const auditCommand: CommandModule<object, object> = {
  command: 'audit <command>',
  describe: 'The audit trail of signing operations: verify, find, rotate, drain, status',
  builder: (y) =>
    y
      .command(verify as never)
      .command(find as never)
      .command(rotate as never)
      .command(drain as never)
      .command(status as never)
      .demandCommand(1, 'Name an audit command: verify, find, rotate, drain or status.'),
  handler: () => undefined,
};
