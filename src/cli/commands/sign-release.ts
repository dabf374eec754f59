import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import type { ReleaseReport } from '../../pipeline/index.js';
import { emit, errorLine, EXIT, handler, withoutOutput, type OutputOptions } from '../output.js';
import { chooseProfile } from '../profile.js';
import { formatBytes, releaseProgress, wantProgress } from '../progress.js';

interface Args extends OutputOptions {
  release: string;
  output: string;
  profile?: string;
  config?: string;
  'dry-run'?: boolean;
  'skip-invalid'?: boolean;
  'verify-passthrough'?: boolean;
  'output-cache'?: boolean;
  threads?: number;
  concurrency?: number;
  progress?: boolean;
  remote?: string;
  'token-env'?: string;
  transport?: string;
  'client-cache'?: string | boolean;
  'mar-cert'?: string[];
  parallel?: number;
}

/** Name of a config file picked up from the release directory when --config is not given. */
export const RELEASE_CONFIG_NAME = 'marsign.config.json';

export const signReleaseCommand: CommandModule<object, Args> = {
  command: 'sign-release <release>',
  describe: 'Sign every locale of a release (a release.json, or a directory of *.mar / *.zip) in-process',
  builder: (y) =>
    y
      .positional('release', {
        type: 'string',
        demandOption: true,
        describe: 'release directory or release.json',
      })
      .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'output directory' })
      .option('profile', {
        alias: 'p',
        type: 'string',
        describe: 'signing profile (default: release.json "profile", else the config\'s only profile)',
      })
      .option('config', {
        alias: 'c',
        type: 'string',
        describe: `config file (default: ${RELEASE_CONFIG_NAME} in the release directory, else $MARSIGN_CONFIG / ./${RELEASE_CONFIG_NAME})`,
      })
      .option('dry-run', { type: 'boolean', describe: 'plan every locale, write nothing' })
      .option('skip-invalid', {
        type: 'boolean',
        describe: 'pass matched non-PE entries through unsigned (recorded)',
      })
      .option('verify-passthrough', {
        type: 'boolean',
        describe:
          'decode every entry not signed (check zip CRCs) before signing the container (default: config policy.verifyPassthrough, else on; --no-verify-passthrough)',
      })
      .option('output-cache', {
        type: 'boolean',
        describe:
          'serve/store whole signed locales from/in the cache (default: config cache.outputs, else on; --no-output-cache)',
      })
      .option('threads', { alias: 't', type: 'number', describe: 'worker threads (default: cores)' })
      .option('concurrency', { type: 'number', describe: 'locales signed at once (default 3)' })
      .option('progress', {
        type: 'boolean',
        default: true,
        describe: 'progress lines on a terminal (--no-progress)',
      })
      .option('remote', {
        type: 'string',
        describe:
          'sign on a marsign serve at this URL: send only the blobs it lacks, fetch only the output blobs the client cache lacks',
      })
      .option('token-env', {
        type: 'string',
        describe: '--remote: the environment variable holding the API token (default MARSIGN_API_TOKEN)',
      })
      .option('transport', {
        type: 'string',
        choices: ['h2', 'h1', 'h1-close'],
        describe: '--remote: one HTTP/2 connection (default), or a pool of HTTP/1.1 keep-alive connections',
      })
      .option('client-cache', {
        type: 'string',
        describe:
          '--remote: blob cache of signed outputs (default $MARSIGN_CLIENT_CACHE, else <cache root>/blobs; --no-client-cache)',
      })
      .option('mar-cert', {
        type: 'string',
        array: true,
        describe:
          "--remote: check outputs against these MAR certificates (default: the profile's keys the server reports)",
      })
      .option('parallel', { type: 'number', describe: '--remote: requests in flight at once (default 16)' })
      .option('json', { type: 'boolean', describe: 'print the release manifest as JSON' }) as never,
  handler: handler<Args>(async (argv) => {
    if (argv.remote) return signRemote(argv);
    // Loaded on use: the command list stays cheap to import for every other command.
    const { loadConfig } = await import('../../config/index.js');
    const { Pipeline, signRelease } = await import('../../pipeline/index.js');
    const { loadReleaseRequest, resolveRequest } = await import('../../release/request.js');
    const { request, base, source } = await loadReleaseRequest(argv.release, { excludeDir: argv.output });
    // -o is the output base: the request's top-level "output" is replaced by it.
    const locales = resolveRequest(request, base, resolve(argv.output), '.');
    const config = await loadConfig(argv.config ?? (await releaseConfig(argv.release)));
    const profile = chooseProfile(argv.profile, request.profile, config);
    // The audit log is opened (and checked) before anything is signed; a dry run signs nothing.
    const { commandRecorder } = await import('../../audit/index.js');
    const audit = argv['dry-run'] ? undefined : await commandRecorder(config);
    const pipeline = await Pipeline.create({
      config,
      ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
      ...(audit ? { audit } : {}),
    });
    const display = releaseProgress(wantProgress(argv), locales.length);
    let manifest: ReleaseReport;
    try {
      manifest = await signRelease({
        signer: pipeline,
        release: request.release,
        source,
        locales,
        outDir: argv.output,
        profile,
        dryRun: argv['dry-run'] === true,
        skipInvalid: argv['skip-invalid'] === true,
        ...(argv['verify-passthrough'] !== undefined
          ? { verifyPassthrough: argv['verify-passthrough'] }
          : {}),
        ...(argv['output-cache'] !== undefined ? { outputCache: argv['output-cache'] } : {}),
        ...(argv.concurrency !== undefined ? { concurrency: argv.concurrency } : {}),
        client: (await import('../../audit/identity.js')).cliClient(),
        onProgress: (p) => display.update(p),
      });
    } finally {
      display.stop();
      await pipeline.close();
    }
    emit(
      argv,
      manifest.dryRun
        ? { ...manifest, locales: manifest.locales.map((l) => withoutOutput(l, l.output)) }
        : manifest,
      () => renderReleaseSummary(manifest),
    );
    if (manifest.totals.failed > 0) {
      for (const l of manifest.locales)
        if (!l.ok && l.error)
          process.stderr.write(`marsign: ${l.error.code}: locale ${l.locale}: ${errorLine(l.error)}\n`);
      process.exitCode = EXIT.ERROR;
    }
  }),
};

/** `sign-release --remote`: the release signed by a marsign serve (src/transfer/remote-release.ts). */
async function signRemote(argv: Args): Promise<void> {
  if (argv['dry-run'])
    throw new UsageError('USAGE' satisfies CliErrorCode, '--dry-run is not available with --remote');
  // The server's config decides (policy.verifyPassthrough): a flag it would not honour is refused, not ignored.
  if (argv['verify-passthrough'] === false)
    throw new UsageError(
      'USAGE' satisfies CliErrorCode,
      "--no-verify-passthrough is not available with --remote (the server's policy.verifyPassthrough decides)",
    );
  const { loadReleaseRequest, resolveRequest } = await import('../../release/request.js');
  const { clientCache, progressLine, remoteClient } = await import('../../transfer/cli.js');
  const { remoteRelease } = await import('../../transfer/remote-release.js');
  const { request, base, source } = await loadReleaseRequest(argv.release, { excludeDir: argv.output });
  const locales = resolveRequest(request, base, resolve(argv.output), '.');
  const profile = argv.profile ?? request.profile;
  if (!profile)
    throw new UsageError(
      'PROFILE_REQUIRED' satisfies CliErrorCode,
      'name the signing profile with --profile (or in release.json)',
    );
  const line = progressLine(wantProgress(argv));
  const client = remoteClient({ ...argv, remote: argv.remote! });
  try {
    const r = await remoteRelease({
      client,
      release: request.release,
      profile,
      source,
      locales,
      outDir: argv.output,
      download: true,
      wait: true,
      cache: clientCache(argv as never),
      ...(argv['mar-cert']?.length ? { marCerts: argv['mar-cert'] } : {}),
      ...(argv.parallel !== undefined ? { parallel: argv.parallel } : {}),
      onProgress: (p) => line.update(p),
    });
    line.stop();
    const report = r.report!;
    emit(argv, { ...report, transfer: r.transfer }, (m) => {
      const t = m.transfer;
      return (
        renderReleaseSummary(m) +
        `\n  transfer: ${formatBytes(t.bytesUp)} up (${t.blobsUploaded}/${t.blobs} blobs; ${formatBytes(t.bytesSkipped)} already on the server), ` +
        `${formatBytes(t.bytesDown)} down (${t.blobsDownloaded} blobs, ${t.blobsFromCache} from the client cache) over ${t.transport}` +
        `\n  checked:  output sha256${t.marKeys === 'none' ? '' : `, MAR signatures (${t.marKeys === 'pinned' ? '--mar-cert' : "the profile's keys from the server"})`}`
      );
    });
    if (report.totals.failed > 0) {
      for (const l of report.locales)
        if (!l.ok && l.error)
          process.stderr.write(`marsign: ${l.error.code}: locale ${l.locale}: ${errorLine(l.error)}\n`);
      process.exitCode = EXIT.ERROR;
    }
  } finally {
    line.stop();
    await client.close();
  }
}

/** `<release dir>/marsign.config.json` (or beside a release.json) when present. */
async function releaseConfig(release: string): Promise<string | undefined> {
  const dir = (await stat(release)).isDirectory() ? release : dirname(release);
  const p = join(dir, RELEASE_CONFIG_NAME);
  return existsSync(p) ? p : undefined;
}

export function renderReleaseSummary(m: ReleaseReport): string {
  const t = m.totals;
  const r = relative(process.cwd(), m.outDir);
  const rel = r === '' ? '.' : r.startsWith('..') ? m.outDir : r;
  const lines = [
    `release ${m.release} (profile ${m.profile})${m.dryRun ? ' — dry run, nothing written' : ''}`,
    `  locales:  ${t.locales}${t.failed ? `, ${t.failed} FAILED` : ''}`,
    `  entries:  ${t.entries} — ${t.signed} signed, ${t.shared} shared, ${t.cached} from the cache, ${t.passthrough} passthrough` +
      (t.skippedInvalid ? `, ${t.skippedInvalid} skipped (invalid)` : ''),
    `  bytes:    ${formatBytes(t.inputBytes)} in → ${formatBytes(t.outputBytes)} out`,
    `  time:     ${(m.timings.ms / 1000).toFixed(2)} s`,
    `  cache:    hit rate ${(t.cacheHitRate * 100).toFixed(0)}% (${t.hits}/${t.hits + t.signed} signable entries)` +
      (t.outputHits ? `; ${t.outputHits} locale(s) served whole from the output cache` : ''),
  ];
  const warned = m.locales.filter((l) => l.warnings);
  if (warned.length)
    lines.push(
      `  warnings: ${warned.map((l) => `${l.locale} ${l.warnings}`).join(', ')} (see the locale manifests)`,
    );
  if (!m.dryRun)
    lines.push(`  output:   ${rel}/ (release-manifest.json, SHA512SUMS, <locale>/*.mar.manifest.json)`);
  return lines.join('\n');
}
