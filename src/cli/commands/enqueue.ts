import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import type { ReleaseStatus, SubmitResult } from '../../queue/types.js';
import { emit, EXIT, handler, type OutputOptions } from '../output.js';
import type { CliErrorCode } from '../errors.js';

interface Args extends OutputOptions {
  manifest: string;
  config?: string;
  output?: string;
  wait?: boolean;
  remote?: string;
  'token-env'?: string;
  transport?: string;
  profile?: string;
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
      .option('remote', {
        type: 'string',
        describe:
          'submit to a marsign serve at this URL by recipe: upload only the blobs it lacks (no shared filesystem, no Redis access)',
      })
      .option('token-env', {
        type: 'string',
        describe: '--remote: the environment variable holding the API token (default MARSIGN_API_TOKEN)',
      })
      .option('transport', {
        type: 'string',
        choices: ['h2', 'h1', 'h1-close'],
        describe: '--remote: one HTTP/2 connection (default) or an HTTP/1.1 keep-alive pool',
      })
      .option('profile', {
        alias: 'p',
        type: 'string',
        describe: "--remote: signing profile (default: the request's)",
      })
      .option('json', { type: 'boolean', describe: 'print JSON' }) as never,
  handler: handler<Args>(async (argv) => {
    if (argv.remote) return enqueueRemote(argv);
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

/** `enqueue --remote`: upload what the server lacks and submit by recipe; `--wait` follows it to the end. */
async function enqueueRemote(argv: Args): Promise<void> {
  const { UsageError } = await import('../../errors.js');
  const { loadReleaseRequest, resolveRequest } = await import('../../release/request.js');
  const { progressLine, remoteClient } = await import('../../transfer/cli.js');
  const { remoteRelease } = await import('../../transfer/remote-release.js');
  const { renderRelease } = await import('../../service/render.js');
  const { request, base, source } = await loadReleaseRequest(argv.manifest);
  // Outputs are blobs on the server: no output path is written here (a name under the base for the report).
  const locales = resolveRequest(request, base, join(base, '.marsign-remote'), '.');
  const profile = argv.profile ?? request.profile;
  if (!profile)
    throw new UsageError(
      'PROFILE_REQUIRED' satisfies CliErrorCode,
      'name the signing profile with --profile (or in the request)',
    );
  const line = progressLine(process.stderr.isTTY && !argv.json);
  const client = remoteClient({ ...argv, remote: argv.remote! });
  try {
    const r = await remoteRelease({
      client,
      release: request.release,
      profile,
      source,
      locales,
      outDir: base,
      download: false,
      wait: argv.wait === true,
      cache: null,
      onProgress: (p) => line.update(p),
    });
    line.stop();
    if (r.status) {
      emit(argv, { ...r.status, transfer: r.transfer }, (s) => renderRelease(s));
      if (r.status.state !== 'completed') process.exitCode = EXIT.ERROR;
      return;
    }
    emit(
      argv,
      { ...r.submitted, transfer: r.transfer },
      (s) =>
        `${s.created ? 'enqueued' : 'resumed'} release ${s.release}: ${s.locales.length} locales; ` +
        `${s.transfer.bytesUp} bytes sent in ${s.transfer.blobsUploaded} of ${s.transfer.blobs} blobs ` +
        `(${s.transfer.bytesSkipped} bytes already on the server)`,
    );
  } finally {
    line.stop();
    await client.close();
  }
}
