import { basename, dirname, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import type { LocaleManifest } from '../../pipeline/types.js';
import { UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import { emit, handler, withoutOutput, type OutputOptions } from '../output.js';
import { chooseProfile } from '../profile.js';
import { formatBytes, localeProgress, wantProgress } from '../progress.js';

interface Args extends OutputOptions {
  input: string;
  output?: string;
  profile?: string;
  config?: string;
  'dry-run'?: boolean;
  'skip-invalid'?: boolean;
  'verify-passthrough'?: boolean;
  'output-cache'?: boolean;
  threads?: number;
  progress?: boolean;
  release?: string;
  locale?: string;
}

export const signLocaleCommand: CommandModule<object, Args> = {
  command: 'sign-locale <input>',
  describe: 'Sign the PE entries of one MAR, recompress, repack and MAR-sign it',
  builder: (y) =>
    y
      .positional('input', { type: 'string', demandOption: true, describe: 'input MAR' })
      .option('output', { alias: 'o', type: 'string', describe: 'output MAR (required unless --dry-run)' })
      .option('profile', {
        alias: 'p',
        type: 'string',
        describe: "signing profile (default: the config's only profile)",
      })
      .option('config', {
        alias: 'c',
        type: 'string',
        describe: 'config file (default: $MARSIGN_CONFIG, ./marsign.config.json)',
      })
      .option('dry-run', {
        type: 'boolean',
        describe: 'print the plan (passthrough / cache hit / to sign) and write nothing',
      })
      .option('skip-invalid', {
        type: 'boolean',
        describe: 'pass matched entries that are not valid PEs through unsigned (recorded in the manifest)',
      })
      .option('verify-passthrough', {
        type: 'boolean',
        describe:
          'decode every entry not signed (check zip CRCs) before signing the container (default: config policy.verifyPassthrough, else on; --no-verify-passthrough)',
      })
      .option('output-cache', {
        type: 'boolean',
        describe:
          'serve/store the whole signed locale from/in the cache (default: config cache.outputs, else on; --no-output-cache)',
      })
      .option('threads', { alias: 't', type: 'number', describe: 'worker threads (default: cores)' })
      .option('release', { type: 'string', describe: 'release id for the audit records' })
      .option('locale', { type: 'string', describe: 'locale code for the audit records' })
      .option('progress', {
        type: 'boolean',
        default: true,
        describe: 'progress line on a terminal (--no-progress)',
      })
      .option('json', { type: 'boolean', describe: 'print the manifest as JSON' }) as never,
  handler: handler<Args>(async (argv) => {
    if (!argv['dry-run'] && !argv.output)
      throw new UsageError(
        'OUTPUT_REQUIRED' satisfies CliErrorCode,
        '-o/--output is required (or use --dry-run)',
      );
    // Loaded on use: the command list stays cheap to import for every other command.
    const { loadConfig } = await import('../../config/index.js');
    const { Pipeline } = await import('../../pipeline/index.js');
    const config = await loadConfig(argv.config);
    if (!argv['dry-run'] && argv.output) {
      // Temps an earlier, killed run left for this output (and its manifest); a live process's stay.
      const { removeStaleTemps } = await import('../../io/atomic.js');
      const name = basename(argv.output);
      await removeStaleTemps(dirname(resolve(argv.output)), { names: [name, `${name}.manifest.json`] });
    }
    // The audit log is opened (and checked) before anything is signed; a dry run signs nothing.
    const audit = argv['dry-run']
      ? undefined
      : await (await import('../../audit/index.js')).commandRecorder(config);
    const pipeline = await Pipeline.create({
      config,
      ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
      ...(audit ? { audit } : {}),
    });
    const bar = localeProgress(wantProgress(argv), basename(argv.input));
    let manifest: LocaleManifest;
    try {
      manifest = await pipeline.signLocale({
        profile: chooseProfile(argv.profile, undefined, config),
        input: argv.input,
        output: argv.output ?? `${argv.input}.dry-run`,
        dryRun: argv['dry-run'] === true,
        skipInvalid: argv['skip-invalid'] === true,
        ...(argv['verify-passthrough'] !== undefined
          ? { verifyPassthrough: argv['verify-passthrough'] }
          : {}),
        ...(argv['output-cache'] !== undefined ? { outputCache: argv['output-cache'] } : {}),
        ...(argv.release !== undefined ? { release: argv.release } : {}),
        ...(argv.locale !== undefined ? { locale: argv.locale } : {}),
        client: (await import('../../audit/identity.js')).cliClient(),
        onProgress: (p) => bar.update(p),
      });
    } finally {
      bar.stop();
      await pipeline.close();
    }
    if (manifest.dryRun) emit(argv, withoutOutput(manifest, argv.output), renderPlan);
    else emit(argv, manifest, renderLocaleSummary);
  }),
};

export function renderPlan(m: Pick<LocaleManifest, 'entries' | 'totals'>): string {
  const width = Math.min(60, Math.max(...m.entries.map((e) => e.name.length), 4));
  // A dry run's actions are what would happen: `signed` = to sign, `cached` = served from the cache.
  const what: Record<string, string> = {
    passthrough: 'passthrough',
    cached: 'cache hit',
    signed: 'sign',
    'skipped-invalid': 'skip (invalid)',
  };
  const lines = m.entries.map(
    (e) =>
      `${(what[e.action] ?? e.action).padEnd(12)} ${e.name.padEnd(width)} ${String(e.inputSize).padStart(10)}  ${e.codec}`,
  );
  const t = m.totals;
  lines.push(
    `plan: ${t.entries} entries: ${t.signed} to sign, ${t.cached} cached, ${t.passthrough} passthrough (dry run, nothing written)`,
  );
  return lines.join('\n');
}

export function renderLocaleSummary(m: LocaleManifest): string {
  const t = m.totals;
  return [
    `${m.output}: ${t.entries} entries: ${t.misses} signed, ${t.hits} cache hits, ${t.passthrough} passthrough` +
      (t.skippedInvalid ? `, ${t.skippedInvalid} skipped (invalid)` : '') +
      (m.outputCache === 'hit' ? ' (whole output served from the cache)' : ''),
    // What was not checked is said so, never implied by silence.
    t.passthrough > 0
      ? m.passthroughVerified
        ? `  passthrough entries checked: ${t.passthroughDecoded} decoded, ${t.passthrough - t.passthroughDecoded} checked before`
        : '  passthrough entries NOT checked (--no-verify-passthrough)'
      : undefined,
    `  ${formatBytes(t.inputBytes)} → ${formatBytes(t.outputBytes)} in ${(m.timings.ms / 1000).toFixed(2)} s; sha512 ${m.outputSha512 ?? '-'}`,
    ...(m.warnings ?? []).map((w) => `  warning: ${w}`),
  ]
    .filter((line) => line !== undefined)
    .join('\n');
}
