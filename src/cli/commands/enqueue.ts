import type { CommandModule } from 'yargs';
import type { ReleaseStatus, SubmitResult } from '../../queue/types.js';
import { emit, EXIT, handler, type OutputOptions } from '../output.js';

interface Args extends OutputOptions {
  manifest: string;
  config?: string;
  output?: string;
  wait?: boolean;
}

export const enqueueCommand: CommandModule<object, Args> = {
  command: 'enqueue <manifest>',
  describe: 'Validate a release request and submit it to the queue (one job per locale)',
  builder: (y) =>
    y
      .positional('manifest', {
        type: 'string',
        demandOption: true,
        describe: 'release request (release.json): { release, profile?, output?, locales }',
      })
      .option('config', {
        alias: 'c',
        type: 'string',
        describe: 'config file (default $MARSIGN_CONFIG, else ./marsign.config.json)',
      })
      .option('output', {
        alias: 'o',
        type: 'string',
        describe: 'output directory (overrides the manifest\'s "output")',
      })
      .option('wait', {
        type: 'boolean',
        describe: 'show progress until the release is done; exit non-zero if it failed',
      })
      .option('json', { type: 'boolean', describe: 'print JSON' }) as never,
  handler: handler<Args>(async (argv) => {
    const { loadConfig } = await import('../../config/index.js');
    const { cliSubmitter, loadRequestFile, openQueue, waitForRelease, warnIfNotPersistent } =
      await import('../../service/client.js');
    const { renderRelease } = await import('../../service/render.js');
    const config = await loadConfig(argv.config);
    // Everything is validated before the first Redis command: a bad manifest enqueues nothing.
    const manifest = await loadRequestFile(config, argv.manifest, argv.output);
    const queue = await openQueue(config);
    try {
      await warnIfNotPersistent(queue);
      const submitted = await queue.submit(manifest, { client: cliSubmitter() });
      if (!argv.wait) {
        emit(argv, submitted, (r: SubmitResult) =>
          r.created
            ? `enqueued release ${r.release}: ${r.locales.length} locales (${r.locales.join(', ')})`
            : `release ${r.release} already exists; nothing enqueued (marsign status ${r.release})`,
        );
        return;
      }
      if (!argv.json && !submitted.created)
        process.stderr.write(`release ${submitted.release} already exists; waiting for it\n`);
      const tty = process.stderr.isTTY && !argv.json;
      let lastLine = '';
      const final = await waitForRelease(queue, manifest.release, (s: ReleaseStatus) => {
        if (argv.json) return;
        const t = s.totals;
        const line = `${s.release}: ${s.state} ${t.completed}/${t.locales} locales, ${t.entriesDone}/${t.entriesTotal} entries, ${t.failed} failed`;
        if (line === lastLine) return;
        lastLine = line;
        process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
      });
      if (tty) process.stderr.write('\n');
      emit(argv, final, renderRelease);
      if (final.state !== 'completed') process.exitCode = EXIT.ERROR;
    } finally {
      await queue.close();
    }
  }),
};
