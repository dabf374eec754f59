import type { Argv, CommandModule } from 'yargs';
import { UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import type { MarInfo } from '../../formats/mar/index.js';
import type { Compression } from '../../mar/file.js';
import { emit, handler } from '../output.js';

/** The zip library and inspection views, loaded only for a zip input. */
async function zipLib() {
  const [file, inspect] = await Promise.all([import('../../zip/file.js'), import('../../zip/inspect.js')]);
  return { ...file, ...inspect };
}

/** `zip` when the file starts with a zip signature, else `mar` (a non-MAR then fails as MAR_BAD_MAGIC). */
async function kindOf(path: string): Promise<'mar' | 'zip'> {
  const { sniffContainer } = await import('../../zip/inspect.js');
  return (await sniffContainer(path)) === 'zip' ? 'zip' : 'mar';
}

/** The MAR library, loaded when a mar command runs rather than when the CLI starts. */
async function marLib() {
  const [file, types] = await Promise.all([
    import('../../mar/file.js'),
    import('../../formats/mar/types.js'),
  ]);
  return { ...file, algorithms: types.MAR_SIGNATURE_ALGORITHMS };
}

interface CommonArgs {
  json?: boolean;
  file: string;
}
interface ReadArgs extends CommonArgs {
  lenient?: boolean;
}

function withRead<T>(y: Argv<T>): Argv<T & ReadArgs> {
  return y
    .positional('file', {
      type: 'string',
      demandOption: true,
      describe: 'MAR or zip file (told apart by content)',
    })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document' })
    .option('lenient', {
      type: 'boolean',
      default: false,
      describe:
        'Also read MARs/zips with names unsafe to extract (absolute, ".."), and MARs with a wrong file-size field / trailing bytes; extract stays strict',
    }) as Argv<T & ReadArgs>;
}

const oct = (n: number): string => n.toString(8).padStart(4, '0');

function summary(info: MarInfo, algorithms: Readonly<Record<number, string>>) {
  const algName = (id: number): string => algorithms[id] ?? 'unknown';
  const storedBytes = info.entries.reduce((n, e) => n + e.size, 0);
  return {
    style: info.style,
    fileSize: info.fileSize,
    ...(info.declaredFileSize === undefined ? {} : { declaredFileSize: info.declaredFileSize }),
    indexOffset: info.indexOffset,
    dataStart: info.dataStart,
    signatures: info.signatures.map((s) => ({ ...s, algorithm: algName(s.algorithmId) })),
    hasAdditionalHeader: info.hasAdditionalHeader,
    additionalSections: info.additionalSections,
    ...(info.productInfo ? { productInfo: info.productInfo } : {}),
    entryCount: info.entries.length,
    storedBytes,
  };
}

const info: CommandModule<object, ReadArgs> = {
  command: 'info <file>',
  describe:
    "Show a MAR's layout (style, size, signatures, additional sections, product info, entry totals) or a zip's (entries, sizes, central directory, zip64, comment)",
  builder: (y) => withRead(y),
  handler: handler<ReadArgs>(async (argv) => {
    if ((await kindOf(argv.file)) === 'zip') return zipInfo(argv);
    const { openMar, algorithms } = await marLib();
    const m = await openMar(argv.file, lenientOpts(argv));
    try {
      emit(argv, summary(m.info, algorithms), (v) => {
        const lines = [
          `style            ${v.style === 'old' ? 'old (no signature block)' : 'modern'}`,
          `file size        ${v.fileSize} bytes` +
            (v.declaredFileSize !== undefined && v.declaredFileSize !== v.fileSize
              ? ` (file_size field says ${v.declaredFileSize})`
              : ''),
          `signatures       ${v.signatures.length}`,
          ...v.signatures.map(
            (s, i) =>
              `  [${i}] algorithm ${s.algorithmId} (${s.algorithm}), ${s.length} bytes at ${s.offset}`,
          ),
          `additional       ${v.hasAdditionalHeader ? `${v.additionalSections.length} section(s)` : 'no header'}`,
          ...v.additionalSections.map(
            (s) =>
              `  id ${s.id}${s.id === 1 ? ' (product information)' : ''}, ${s.size} bytes at ${s.offset}`,
          ),
          `product info     ${
            v.productInfo
              ? `channel ${JSON.stringify(v.productInfo.channel)}, version ${JSON.stringify(v.productInfo.version)} (${v.productInfo.padded ? 'libmar padded' : 'exact size'})`
              : 'none'
          }`,
          `entries          ${v.entryCount} (${v.storedBytes} bytes stored, data at ${v.dataStart}, index at ${v.indexOffset})`,
        ];
        return lines.join('\n');
      });
    } finally {
      await m.close();
    }
  }),
};

type ListArgs = ReadArgs & { verbose?: boolean };

const list: CommandModule<object, ListArgs> = {
  command: 'list <file>',
  describe:
    'List entries like mardor `mar -t` (size, mode, name) or, for a zip, like `zipinfo`; --verbose adds offsets and codecs (zip: CRC, descriptor, zip64, extra fields)',
  builder: (y) =>
    withRead(y).option('verbose', {
      alias: 'v',
      type: 'boolean',
      default: false,
      describe: 'Also print the signature/product-info header (like `mar -T`), offsets and codecs',
    }),
  handler: handler<ListArgs>(async (argv) => {
    if ((await kindOf(argv.file)) === 'zip') return zipList(argv);
    const { openMar, entryCodecs, algorithms } = await marLib();
    const m = await openMar(argv.file, lenientOpts(argv));
    try {
      const codecs = await entryCodecs(m);
      const entries = m.info.entries.map((e, i) => ({ ...e, mode: oct(e.flags), codec: codecs[i]! }));
      emit(argv, { ...summary(m.info, algorithms), entries }, (v) => {
        const lines: string[] = [];
        if (argv.verbose) {
          if (m.info.style === 'modern')
            lines.push(`Signature block found with ${v.signatures.length} signature`);
          for (const [i, s] of v.signatures.entries())
            lines.push(`- Signature ${i}: algorithm ${s.algorithmId} (${s.algorithm}), ${s.length} bytes`);
          if (v.hasAdditionalHeader) {
            lines.push(`${v.additionalSections.length} additional block found:`);
            for (const s of v.additionalSections) {
              if (s.id === 1 && v.productInfo) {
                lines.push('  - Product Information Block:');
                lines.push(`    - MAR channel name: ${v.productInfo.channel}`);
                lines.push(`    - Product version: ${v.productInfo.version}`);
                lines.push('');
              } else lines.push('Unknown additional data');
            }
          }
          lines.push(
            `${'SIZE'.padEnd(7)} ${'MODE'.padEnd(7)} ${'OFFSET'.padEnd(8)} ${'CODEC'.padEnd(5)} NAME`,
          );
          for (const e of v.entries)
            lines.push(
              `${String(e.size).padEnd(7)} ${e.mode}    ${String(e.offset).padEnd(8)} ${e.codec.padEnd(5)} ${e.name}`,
            );
        } else {
          // mardor cli.py do_list: "{:7s} {:7s} {:7s}" header, "{:<7d} {:04o}    {}" rows.
          lines.push(`${'SIZE'.padEnd(7)} ${'MODE'.padEnd(7)} ${'NAME'.padEnd(7)}`);
          for (const e of v.entries) lines.push(`${String(e.size).padEnd(7)} ${e.mode}    ${e.name}`);
        }
        return lines.join('\n');
      });
    } finally {
      await m.close();
    }
  }),
};

type ExtractArgs = CommonArgs & {
  dest: string;
  decompress?: boolean;
  'max-entry-size'?: number;
  'max-ratio'?: number;
};

const extract: CommandModule<object, ExtractArgs> = {
  command: 'extract <file> <dest>',
  describe:
    'Extract every entry into DEST (must not exist or be empty); names are checked, nothing is written outside DEST, and a failure leaves no output',
  builder: (y) =>
    y
      .positional('file', {
        type: 'string',
        demandOption: true,
        describe: 'MAR or zip file (told apart by content)',
      })
      .positional('dest', { type: 'string', demandOption: true, describe: 'destination directory' })
      .option('decompress', {
        alias: 'd',
        type: 'boolean',
        default: false,
        describe:
          'MAR: decompress bz2/xz entries (detected by magic); default writes the stored bytes. Zip entries are always inflated and CRC-checked',
      })
      .option('max-entry-size', {
        type: 'number',
        describe:
          'With --decompress: largest decoded size of one entry in bytes (default 1073741824 = 1 GiB)',
      })
      .option('max-ratio', {
        type: 'number',
        describe:
          'With --decompress: largest compression ratio of one entry, decoded/stored bytes (default 1000; outputs up to 16 MiB are exempt)',
      })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'Print one JSON document',
      }) as Argv<ExtractArgs>,
  handler: handler<ExtractArgs>(async (argv) => {
    if ((await kindOf(argv.file)) === 'zip') {
      const { extractZip } = await zipLib();
      const r = await extractZip(argv.file, argv.dest);
      emit(argv, r, (v) =>
        [...v.files.map((f) => f.name), `extracted ${v.files.length} entries to ${v.destDir}`].join('\n'),
      );
      return;
    }
    const { extractMar } = await marLib();
    const limit = (flag: 'max-entry-size' | 'max-ratio', min: number): number | undefined => {
      const v = argv[flag];
      if (v !== undefined && !(Number.isSafeInteger(v) && v >= min))
        throw new UsageError(
          'USAGE' satisfies CliErrorCode,
          `--${flag} must be an integer ≥ ${min}, found ${String(v)}`,
        );
      return v;
    };
    const maxOutputSize = limit('max-entry-size', 0);
    const maxRatio = limit('max-ratio', 1);
    const r = await extractMar(argv.file, argv.dest, {
      decompress: argv.decompress ?? false,
      ...(maxOutputSize === undefined ? {} : { maxOutputSize }),
      ...(maxRatio === undefined ? {} : { maxRatio }),
    });
    emit(argv, r, (v) =>
      [...v.files.map((f) => `${f.name}`), `extracted ${v.files.length} entries to ${v.destDir}`].join('\n'),
    );
  }),
};

type CreateArgs = CommonArgs & {
  inputs: string[];
  compression: Compression;
  'x86-filter'?: boolean;
  channel?: string;
  'product-version'?: string;
};

const create: CommandModule<object, CreateArgs> = {
  command: 'create <file> <inputs..>',
  describe:
    "Create a modern unsigned MAR (libmar layout) from files and/or directories (a directory's files are named relative to it)",
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'MAR file to write' })
      .positional('inputs', {
        type: 'string',
        array: true,
        demandOption: true,
        describe: 'files or directories',
      })
      .option('compression', {
        choices: ['none', 'bz2', 'xz'] as const,
        default: 'none' as Compression,
        describe:
          'Compress each entry (xz: LZMA2 8 MiB dictionary, CRC64; bz2: level 9); none stores the bytes like `mar -c`',
      })
      .option('x86-filter', {
        type: 'boolean',
        default: false,
        describe: 'xz only: add the x86 BCJ filter (for executables)',
      })
      .option('channel', {
        type: 'string',
        describe: 'Product-information MAR channel id (≤ 63 ASCII chars)',
      })
      .option('product-version', {
        type: 'string',
        describe: 'Product-information version (≤ 31 ASCII chars)',
      })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'Print one JSON document',
      }) as Argv<CreateArgs>,
  handler: handler<CreateArgs>(async (argv) => {
    const channel = argv.channel;
    const version = argv['product-version'];
    if ((channel === undefined) !== (version === undefined))
      throw new UsageError(
        'USAGE' satisfies CliErrorCode,
        '--channel and --product-version go together (one product-information block)',
      );
    if (argv['x86-filter'] && argv.compression !== 'xz')
      throw new UsageError('USAGE' satisfies CliErrorCode, '--x86-filter needs --compression xz');
    const { createMar, algorithms } = await marLib();
    const info = await createMar(argv.file, argv.inputs, {
      compression: argv.compression,
      x86: argv['x86-filter'] ?? false,
      ...(channel !== undefined && version !== undefined ? { productInfo: { channel, version } } : {}),
    });
    emit(
      argv,
      { file: argv.file, ...summary(info, algorithms), entries: info.entries },
      (v) => `wrote ${v.file}: ${v.entryCount} entries, ${v.fileSize} bytes`,
    );
  }),
};

async function zipInfo(argv: ReadArgs): Promise<void> {
  const z = await zipLib();
  const m = await z.openZip(argv.file, argv.lenient ? { allowUnsafeNames: true } : {});
  try {
    emit(argv, z.zipSummary(m.info), (v) =>
      [
        `format           zip`,
        `file size        ${v.fileSize} bytes`,
        `entries          ${v.entryCount} (${v.compressedBytes} bytes compressed, ${v.uncompressedBytes} uncompressed; ${v.descriptors} with data descriptors)`,
        `central dir      ${v.centralDirectorySize} bytes at ${v.centralDirectoryOffset}`,
        `zip64            ${v.zip64 ? `end record at ${v.zip64.offset}, locator at ${v.zip64.locatorOffset}` : 'no'}`,
        `comment          ${v.comment ? JSON.stringify(v.comment) : 'none'}`,
      ].join('\n'),
    );
  } finally {
    await m.close();
  }
}

async function zipList(argv: ListArgs): Promise<void> {
  const z = await zipLib();
  const m = await z.openZip(argv.file, argv.lenient ? { allowUnsafeNames: true } : {});
  try {
    const value = { ...z.zipSummary(m.info), entries: m.info.entries.map(z.zipEntryView) };
    emit(argv, value, () =>
      argv.verbose
        ? `${z.zipinfoListing(argv.file, m.info)}\n\n${z.zipVerboseListing(m.info)}`
        : z.zipinfoListing(argv.file, m.info),
    );
  } finally {
    await m.close();
  }
}

function lenientOpts(argv: ReadArgs) {
  return argv.lenient ? { allowUnsafeNames: true, allowSizeMismatch: true } : {};
}

export const marCommand: CommandModule<object, object> = {
  command: 'mar <command>',
  describe:
    'Read, list and extract MAR and zip files (info, list, extract; told apart by content); create MAR files',
  builder: (y) =>
    y
      .command(info as never)
      .command(list as never)
      .command(extract as never)
      .command(create as never)
      .demandCommand(1, 'Name a mar command: info, list, extract or create.'),
  handler: () => undefined,
};
