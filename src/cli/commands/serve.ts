import type { CommandModule } from 'yargs';
import { handler, type OutputOptions } from '../output.js';

interface Args extends OutputOptions {
  config?: string;
  host?: string;
  port?: number;
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
        alias: 'p',
        type: 'number',
        describe: 'listen port (default: server.port, else 8080)',
      })
      .option('json', {
        type: 'boolean',
        describe: 'logs are always JSON; accepted for uniformity',
      }) as never,
  handler: handler<Args>(async (argv) => {
    const { loadConfig } = await import('../../config/index.js');
    const { buildServer } = await import('../../service/server.js');
    const { loadClients } = await import('../../service/auth.js');
    const config = await loadConfig(argv.config);
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
    const port = argv.port ?? config.file.server?.port ?? 8080;
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
