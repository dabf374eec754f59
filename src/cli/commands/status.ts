import type { CommandModule } from 'yargs';
import type { WorkerHeartbeat } from '../../queue/heartbeat.js';
import type { ReleaseStatus } from '../../queue/types.js';
import { UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import { emit, handler, type OutputOptions } from '../output.js';

interface Args extends OutputOptions {
  release?: string;
  config?: string;
  watch?: boolean;
  workers?: boolean;
  limit?: number;
  interval?: number;
}

export const statusCommand: CommandModule<object, Args> = {
  command: 'status [release]',
  describe: 'Show releases in the queue, or one release with per-locale state, progress and errors',
  builder: (y) =>
    y
      .positional('release', { type: 'string', describe: 'release id (default: list recent releases)' })
      .option('config', {
        alias: 'c',
        type: 'string',
        describe:
          'config file (default $MARSIGN_CONFIG, else ./marsign.config.json; without one: $MARSIGN_REDIS_URL, else redis://127.0.0.1:6379)',
      })
      .option('watch', {
        alias: 'w',
        type: 'boolean',
        describe: 'redraw until interrupted (a release: until it finishes)',
      })
      .option('workers', {
        type: 'boolean',
        describe: 'list the workers heard from lately: last heartbeat, alive/stale/stopped, utilisation',
      })
      .option('limit', { type: 'number', default: 20, describe: 'releases listed' })
      .option('interval', { type: 'number', default: 1000, describe: '--watch refresh in ms' })
      .option('json', { type: 'boolean', describe: 'print JSON' }) as never,
  handler: handler<Args>(async (argv) => {
    const { loadConfigIfPresent } = await import('../../config/index.js');
    const { openQueue, warnIfNotPersistent } = await import('../../service/client.js');
    const { renderRelease, renderReleaseList, renderWorkers } = await import('../../service/render.js');
    if (argv.limit !== undefined && (!Number.isInteger(argv.limit) || argv.limit < 1)) {
      throw new UsageError(
        'USAGE' satisfies CliErrorCode,
        `--limit must be a positive integer, found ${argv.limit}`,
      );
    }
    // Reading the queue needs only Redis: no config is needed (README "marsign status --watch").
    const config = await loadConfigIfPresent(argv.config);
    const queue = await openQueue(config);
    try {
      await warnIfNotPersistent(queue);
      type View = ReleaseStatus | ReleaseStatus[] | { workers: WorkerHeartbeat[] };
      const once = async (): Promise<View> => {
        if (argv.workers) return { workers: await queue.workers() };
        if (argv.release) {
          const s = await queue.get(argv.release);
          if (!s)
            throw new UsageError(
              'RELEASE_NOT_FOUND' satisfies CliErrorCode,
              `no release ${JSON.stringify(argv.release)} in the queue`,
            );
          return s;
        }
        return queue.list({ limit: argv.limit ?? 20 });
      };
      // The release list is followed by the workers (liveness), in text; JSON keeps the list as it was.
      const workers = async (): Promise<string> =>
        argv.json ? '' : '\n\n' + renderWorkers(await queue.workers());
      const show = async (v: View): Promise<void> => {
        const tail = Array.isArray(v) ? await workers() : '';
        emit(argv, v, (x) =>
          'workers' in x
            ? renderWorkers(x.workers)
            : Array.isArray(x)
              ? renderReleaseList(x) + tail
              : renderRelease(x),
        );
      };
      if (!argv.watch) {
        await show(await once());
        return;
      }
      const tty = process.stdout.isTTY && !argv.json;
      let stop = false;
      process.once('SIGINT', () => (stop = true));
      while (!stop) {
        const v = await once();
        if (tty) process.stdout.write('\x1b[H\x1b[2J');
        await show(v);
        if (!Array.isArray(v) && 'state' in v && (v.state === 'completed' || v.state === 'failed')) break;
        await new Promise((r) => setTimeout(r, argv.interval ?? 1000));
      }
    } finally {
      await queue.close();
    }
  }),
};
