import { stat } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import type { CacheStore, CacheVerifyReport } from '../../../cache/types.js';
import type { LoadedConfig } from '../../config/types.js';
import { UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import { emit, EXIT, handler } from '../output.js';

/** The cache and config libraries, loaded when a cache command runs rather than when the CLI starts. */
async function cacheLib() {
  const [factory, size, config] = await Promise.all([
    import('../../../cache/factory.js'),
    import('../../../cache/size.js'),
    import('../../config/index.js'),
  ]);
  return { factory, size, config };
}
type CacheLib = Awaited<ReturnType<typeof cacheLib>>;

interface CacheArgs {
  json?: boolean;
  cacheDir?: string;
  config?: string;
  client?: boolean;
}

function withCommon<T>(y: Argv<T>): Argv<T & CacheArgs> {
  return y
    .option('cache-dir', {
      type: 'string',
      describe:
        "Cache root (default: the config's cache.dir, else $MARSIGN_CACHE_DIR, else $XDG_CACHE_HOME/marsign or ~/.cache/marsign)",
    })
    .option('config', {
      alias: 'c',
      type: 'string',
      describe:
        'Config file for cache.dir and the HMAC secret (default: $MARSIGN_CONFIG, else ./marsign.config.json if present)',
    })
    .option('client', {
      type: 'boolean',
      describe:
        "The remote client's blob cache instead (sign-release --remote: $MARSIGN_CLIENT_CACHE, else <cache root>/blobs)",
    })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document' });
}

/** --cache-dir, else with --client the remote client's blob cache, else the config's. */
async function dirOption(argv: CacheArgs): Promise<{ dir?: string }> {
  if (argv.cacheDir) return { dir: argv.cacheDir };
  if (!argv.client) return {};
  const { clientCacheDir } = await import('../../../cache/defaults.js');
  return { dir: clientCacheDir() };
}

/** The config is optional here: used when named (--config, $MARSIGN_CONFIG) or present in the cwd. */
async function configOf(L: CacheLib, argv: CacheArgs): Promise<LoadedConfig | undefined> {
  return L.config.loadConfigIfPresent(argv.config);
}

/** Where the cache root came from, for CACHE_NOT_FOUND. */
function rootSource(argv: CacheArgs, config: LoadedConfig | undefined): string {
  if (argv.cacheDir) return '--cache-dir';
  if (argv.client)
    return process.env.MARSIGN_CLIENT_CACHE ? '$MARSIGN_CLIENT_CACHE' : '--client (the default)';
  if (config?.file.cache?.dir) return `cache.dir in ${config.path}`;
  return process.env.MARSIGN_CACHE_DIR ? '$MARSIGN_CACHE_DIR' : 'the default';
}

/**
 * A cache that does not exist is an error, not an empty cache: `--cache-dir` with a typo would
 * otherwise read "0 entries" (and verify "all ok") about a directory nobody looked at.
 */
async function requireRoot(L: CacheLib, argv: CacheArgs, config: LoadedConfig | undefined): Promise<string> {
  const root = L.config.cacheDirOf(config, (await dirOption(argv)).dir);
  const st = await stat(root).catch(() => undefined);
  if (!st?.isDirectory())
    throw new UsageError(
      'CACHE_NOT_FOUND' satisfies CliErrorCode,
      `no cache at ${root} (from ${rootSource(argv, config)}): ${st ? 'not a directory' : 'no such directory'}`,
      { details: { root } },
    );
  return root;
}

/**
 * stats and prune never check an HMAC, so they open the store without the cache's secret (neither read
 * nor created).
 */
async function adminStore(L: CacheLib, argv: CacheArgs): Promise<CacheStore> {
  const config = await configOf(L, argv);
  await requireRoot(L, argv, config);
  return L.factory.openCacheStore(config, { noSecret: true, ...(await dirOption(argv)) });
}

const stats: CommandModule<CacheArgs, CacheArgs> = {
  command: 'stats',
  describe: 'Show the number of entries and bytes in the cache',
  builder: (y) => withCommon(y),
  handler: handler<CacheArgs>(async (argv) => {
    const L = await cacheLib();
    const { formatSize } = L.size;
    const s = await (await adminStore(L, argv)).stats();
    const none = { entries: 0, bytes: 0 };
    const kinds = s.byKind ?? {
      entry: { entries: s.entries, bytes: s.bytes },
      signature: none,
      output: none,
      blob: none,
      check: none,
    };
    // All kinds share one LRU (prune); the split is by file name, so it costs no extra reads.
    const out = {
      root: s.root,
      entries: s.entries,
      bytes: s.bytes,
      signedEntries: kinds.entry,
      peSignatures: kinds.signature,
      localeOutputs: kinds.output,
      blobs: kinds.blob,
      passthroughChecks: kinds.check,
    };
    emit(argv, out, (v) =>
      [
        `cache root  ${v.root}`,
        `entries     ${v.entries}`,
        `  signed entries  ${v.signedEntries.entries} (${formatSize(v.signedEntries.bytes)})`,
        `  PE signatures   ${v.peSignatures.entries} (${formatSize(v.peSignatures.bytes)})`,
        `  locale outputs  ${v.localeOutputs.entries} (${formatSize(v.localeOutputs.bytes)})`,
        `  blobs           ${v.blobs.entries} (${formatSize(v.blobs.bytes)})`,
        `  passthrough checks ${v.passthroughChecks.entries} (${formatSize(v.passthroughChecks.bytes)})`,
        `size        ${formatSize(v.bytes)} (${v.bytes} bytes)`,
      ].join('\n'),
    );
  }),
};

const verify: CommandModule<CacheArgs, CacheArgs & { repair: boolean }> = {
  command: 'verify',
  describe:
    'Check every entry (header, HMAC, payload sha256) and report anything that is not a regular file or directory; exit 1 if bad entries remain',
  builder: (y) =>
    withCommon(y).option('repair', {
      type: 'boolean',
      default: false,
      describe:
        'Remove bad entries, symlinks/FIFOs/sockets/devices (the link itself, never its target), and leftover temp files of crashed writers',
    }),
  handler: handler<CacheArgs & { repair: boolean }>(async (argv) => {
    const L = await cacheLib();
    const config = await configOf(L, argv);
    const dir = await dirOption(argv);
    // A cache that does not exist is refused, not created (with a secret) to be verified empty.
    const root = await requireRoot(L, argv, config);
    const report: CacheVerifyReport = await (
      await L.factory.openCacheStore(config, dir)
    ).verify({ repair: argv.repair });
    const out = { root, repaired: argv.repair, ...report };
    emit(argv, out, (v) => {
      const lines = [`checked ${v.checked} entries in ${v.root}: ${v.ok} ok, ${v.bad.length} bad`];
      for (const b of v.bad)
        lines.push(
          `bad ${b.key}${b.kind === 'output' ? ' (locale output)' : b.kind === 'signature' ? ' (PE signature)' : b.kind === 'blob' ? ' (blob)' : b.kind === 'check' ? ' (passthrough check)' : ''} ${b.reason}${v.repaired ? ' (removed)' : ''}`,
        );
      for (const u of v.unsafe)
        lines.push(
          `unsafe ${u.type} ${u.path}${u.removed === true ? ' (removed)' : u.removed === false ? ' (NOT removed)' : ''}`,
        );
      if (v.staleTempRemoved) lines.push(`removed ${v.staleTempRemoved} leftover temp files`);
      return lines.join('\n');
    });
    const unsafeLeft = report.unsafe.some((u) => u.removed !== true);
    if ((report.bad.length > 0 && !argv.repair) || unsafeLeft) process.exitCode = EXIT.INVALID;
  }),
};

type PruneArgs = CacheArgs & { 'max-size': string };

const prune: CommandModule<CacheArgs, PruneArgs> = {
  command: 'prune',
  describe: 'Remove least recently used entries until the cache is at most --max-size',
  builder: (y) =>
    withCommon(y).option('max-size', {
      type: 'string',
      demandOption: true,
      describe: 'Size to shrink to: bytes, or with a unit: 500M, 2G, 1.5GiB (binary), 300MB (decimal)',
    }),
  handler: handler<PruneArgs>(async (argv) => {
    const L = await cacheLib();
    const { formatSize } = L.size;
    const maxBytes = L.size.parseSize(argv['max-size']);
    const store = await adminStore(L, argv);
    const root = store.location;
    const r = await store.prune(maxBytes);
    const out = { root, maxBytes, ...r };
    emit(argv, out, (v) => {
      const lines = [
        `removed ${v.removed} entries (${formatSize(v.freedBytes)}); ${formatSize(v.remainingBytes)} remain (limit ${formatSize(v.maxBytes)})`,
      ];
      if (v.staleTempRemoved) lines.push(`removed ${v.staleTempRemoved} leftover temp files`);
      return lines.join('\n');
    });
  }),
};

export const cacheCommand: CommandModule<object, CacheArgs> = {
  command: 'cache <command>',
  describe: 'Inspect and maintain the content-addressed cache (stats, verify, prune)',
  builder: (y) =>
    y
      .command(stats as never)
      .command(verify as never)
      .command(prune as never)
      .demandCommand(1, 'Name a cache command: stats, verify or prune.'),
  handler: () => undefined,
};
