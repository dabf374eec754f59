import type { CommandModule } from 'yargs';
import { handler, type OutputOptions } from '../output.js';

interface Args extends OutputOptions {
  config?: string;
  concurrency?: number;
  threads?: number;
  'shutdown-timeout'?: number;
  'canary-interval'?: number;
  'lock-duration'?: number;
  'stalled-interval'?: number;
  'sign-lock'?: number;
  'heartbeat-interval'?: number;
}

export const workerCommand: CommandModule<object, Args> = {
  command: 'worker',
  describe: 'Consume locale jobs from the release queue (one signing pool per process; JSON logs on stdout)',
  builder: (y) =>
    y
      .option('config', {
        alias: 'c',
        type: 'string',
        describe: 'config file (default $MARSIGN_CONFIG, else ./marsign.config.json)',
      })
      .option('concurrency', { alias: 'n', type: 'number', describe: 'locale jobs at once (default 2)' })
      .option('threads', { alias: 't', type: 'number', describe: 'signing pool threads (default: cores)' })
      .option('shutdown-timeout', {
        type: 'number',
        describe: 'ms in-flight locales get to finish on SIGTERM (default 60000)',
      })
      .option('canary-interval', {
        type: 'number',
        describe: 'ms between canary signings, 0 = only at start (default 300000)',
      })
      .option('lock-duration', {
        type: 'number',
        describe: "BullMQ job lock in ms; a killed worker's job is re-run after it (default 30000)",
      })
      .option('stalled-interval', {
        type: 'number',
        describe: 'ms between stalled-job checks (default 30000)',
      })
      .option('heartbeat-interval', {
        type: 'number',
        describe: 'ms between heartbeats and metric snapshots; silent for 3 of them = stale (default 2000)',
      })
      .option('sign-lock', {
        type: 'number',
        describe: "ms a crashed worker's single-flight signing lock blocks others (default 30000)",
      })
      .option('json', {
        type: 'boolean',
        describe: 'logs are always JSON; accepted for uniformity',
      }) as never,
  handler: handler<Args>(async (argv) => {
    const { loadConfig } = await import('../../config/index.js');
    const { WorkerService } = await import('../../service/worker.js');
    const config = await loadConfig(argv.config);
    const { assertRedisAuth, redisSettings } = await import('../../queue/connection.js');
    await assertRedisAuth(redisSettings(config));
    const opt = <K extends string, V>(k: K, v: V | undefined): Partial<Record<K, V>> =>
      (v === undefined ? {} : { [k]: v }) as Partial<Record<K, V>>;
    const svc = await WorkerService.start({
      config,
      ...opt('concurrency', argv.concurrency),
      ...opt('threads', argv.threads),
      ...opt('shutdownTimeoutMs', argv['shutdown-timeout']),
      ...opt('canaryIntervalMs', argv['canary-interval']),
      ...opt('lockDurationMs', argv['lock-duration']),
      ...opt('stalledIntervalMs', argv['stalled-interval']),
      ...opt('signLockMs', argv['sign-lock']),
      ...opt('snapshotIntervalMs', argv['heartbeat-interval']),
    });
    await new Promise<void>((resolve) => {
      svc.installSignalHandlers((code) => {
        process.exitCode = code;
        resolve();
      });
    });
    // Give pino a tick to flush, then leave even if a library keeps a handle open.
    setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
  }),
};
