import type { CommandModule } from 'yargs';
import { UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import { handler, type OutputOptions } from '../output.js';

interface Args extends OutputOptions {
  config?: string;
  host?: string;
  port?: number;
  /** Deprecated spelling of --port (-p is --profile in every command that has one). */
  p?: string;
}

/**
 * --port, or the old `-p N` (serve has no profile, so a number there can only mean the port): accepted
 * with a warning. Anything else after -p is refused rather than guessed.
 */
export function portOption(argv: Pick<Args, 'port' | 'p'>): number | undefined {
  if (argv.p === undefined) return argv.port;
  const n = Number(argv.p);
  if (argv.p === '' || !Number.isInteger(n) || n < 0 || n > 65535)
    throw new UsageError(
      'USAGE' satisfies CliErrorCode,
      `serve takes no profile; -p was its old port option and needs a port number, found ${JSON.stringify(argv.p)} (use --port)`,
    );
  if (argv.port !== undefined && argv.port !== n)
    throw new UsageError(
      'USAGE' satisfies CliErrorCode,
      `-p ${n} and --port ${argv.port} disagree (use --port only)`,
    );
  process.stderr.write('marsign: warning: serve -p is deprecated; use --port\n');
  return n;
}

export const serveCommand: CommandModule<object, Args> = {
  command: 'serve',
  describe: 'HTTP API, operator dashboard, BullMQ dashboard (/queues), /metrics and health endpoints',
  builder: (y) =>
    y
      .option('config', {
        alias: 'c',
        type: 'string',
        describe: 'config file (default $MARSIGN_CONFIG, else ./marsign.config.json)',
      })
      .option('host', { type: 'string', describe: 'listen address (default: server.host, else 127.0.0.1)' })
      .option('port', {
        type: 'number',
        describe: 'listen port (default: server.port, else 8080)',
      })
      // Hidden: the old spelling, kept so existing unit files keep working (README "Conventions").
      .option('p', { type: 'string', hidden: true })
      .option('json', {
        type: 'boolean',
        describe: 'logs are always JSON; accepted for uniformity',
      }) as never,
  handler: handler<Args>(async (argv) => {
    const portFlag = portOption(argv);
    const { loadConfig } = await import('../../config/index.js');
    const { buildServer } = await import('../../service/server.js');
    const { loadClients } = await import('../../service/auth.js');
    const config = await loadConfig(argv.config);
    const { assertRedisAuth, redisSettings } = await import('../../queue/connection.js');
    await assertRedisAuth(redisSettings(config));
    const clients = await loadClients(config);
    const svc = await buildServer({ config, clients });
    svc.app.log.info({ clients: clients.list, legacy: clients.legacy }, 'api clients');
    // The workers' audit records: moved from Redis into the audit log (one drainer at a time holds the
    // lease; another serve stands by). Off with audit.drain: false (then run `marsign audit drain`).
    const drain =
      config.file.audit?.drain === false
        ? undefined
        : await (await import('../../audit/index.js')).startAuditDrain(config, svc.app.log as never);
    if (drain) svc.app.log.info({ log: drain.log.path }, 'audit drain started');
    const host = argv.host ?? config.file.server?.host ?? '127.0.0.1';
    const port = portFlag ?? config.file.server?.port ?? 8080;
    await svc.app.listen({ host, port });
    await new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        svc.app.log.info({ signal: sig }, 'server shutting down');
        Promise.all([svc.close(), drain?.stop()]).then(() => resolve(), resolve);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
  }),
};
