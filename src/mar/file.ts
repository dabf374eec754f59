import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { namingEntry, UsageError } from '../errors.js';
import { DEFAULT_MAX_OUTPUT_SIZE, type CodecName, type CodecSettings } from '../codecs/types.js';
import { FileSource } from '../io/byte-source.js';
import { extractInto } from '../io/extract.js';
import {
  assertSafeName,
  entryCodecOf,
  marError,
  readEntryBytes,
  readMar,
  unsafeNameReason,
  type MarInfo,
  type ProductInfo,
  type ReadMarOptions,
} from '../formats/mar/index.js';
import { MarWriter } from './writer.js';

/** The code src/mar/file.ts raises itself (the MAR reader and writer raise MarErrorCode). */
export type MarFileErrorCode = 'BAD_INPUT';

/** The codec module is loaded only when an entry is (de)compressed: listing and raw extraction stay light. */
async function codecs(): Promise<typeof import('../codecs/index.js')> {
  return import('../codecs/index.js');
}

export interface OpenMar {
  source: FileSource;
  info: MarInfo;
  close(): Promise<void>;
}

/** Open and validate a MAR file; entries are read on demand from `source`. */
export async function openMar(path: string, options: ReadMarOptions = {}): Promise<OpenMar> {
  const source = await FileSource.open(path);
  try {
    const info = await readMar(source, options);
    return { source, info, close: () => source.close() };
  } catch (e) {
    await source.close();
    throw e;
  }
}

/** The codec of each entry, by magic (mar-format.md §9), reading only the first bytes. */
export async function entryCodecs(m: OpenMar): Promise<CodecName[]> {
  const out: CodecName[] = [];
  for (const e of m.info.entries) {
    out.push(e.size === 0 ? 'none' : entryCodecOf(await m.source.read(e.offset, Math.min(e.size, 6))));
  }
  return out;
}

export interface ExtractOptions {
  /** Decompress bz2/xz entries (detected by magic). Default false: write the stored bytes. */
  decompress?: boolean;
  /** Per-entry decompressed-size cap (default: the codec module's DEFAULT_MAX_OUTPUT_SIZE, 1 GiB). */
  maxOutputSize?: number;
  /** Per-entry compression-ratio cap (default: the codec module's DEFAULT_MAX_RATIO; see DecodeOptions). */
  maxRatio?: number;
  /** Cap on all extracted bytes together (default MAR_MAX_EXTRACT_TOTAL). */
  maxTotalSize?: number;
}

/**
 * Default cap on everything one extraction writes: an unpacked Firefox is ~0.5 GiB, and without a total
 * cap 65536 entries × the per-entry cap would be a disk-filling bomb.
 */
export const MAR_MAX_EXTRACT_TOTAL = 8 * 1024 * 1024 * 1024;

export interface ExtractResult {
  destDir: string;
  files: { name: string; size: number; mode: number }[];
}

/**
 * Extract every entry under `destDir`, which must not exist or be an empty directory.
 * Entries go to a fresh temp directory beside it, renamed into place at the end, so a failure
 * leaves nothing behind — nor does SIGINT/SIGTERM/SIGHUP, which remove the temp directory first. Each path is re-validated, resolved and checked to stay inside the temp
 * directory; no component may be a symlink, and files are opened O_EXCL|O_NOFOLLOW (§11.6-8).
 * Modes are `flags & 0o777` (never setuid/setgid/sticky).
 */
export async function extractMar(
  path: string,
  destDir: string,
  options: ExtractOptions = {},
): Promise<ExtractResult> {
  const unsafe = (message: string, offset?: number): Error => marError('MAR_UNSAFE_EXTRACT', message, offset);
  const { destDir: dest, result: files } = await extractInto(destDir, unsafe, async (x) => {
    const m = await openMar(path);
    try {
      const c = options.decompress ? await codecs() : undefined;
      const maxTotal = options.maxTotalSize ?? MAR_MAX_EXTRACT_TOTAL;
      const files: ExtractResult['files'] = [];
      let total = 0;
      for (const e of m.info.entries) {
        assertSafeName(e.name);
        const target = x.target(e.name, e.offset);
        await x.makeDirs(dirname(target), e.name);
        let data = await readEntryBytes(m.source, e);
        if (c && data.length > 0 && c.detectCodec(data) !== 'none') {
          const perEntry = options.maxOutputSize ?? DEFAULT_MAX_OUTPUT_SIZE;
          data = await c
            .decompress(data, {
              maxOutputSize: Math.min(perEntry, maxTotal - total + 1),
              ...(options.maxRatio === undefined ? {} : { maxRatio: options.maxRatio }),
            })
            .catch((err: unknown) => {
              throw namingEntry(err, e.name);
            });
        }
        total += data.length;
        if (total > maxTotal)
          throw marError(
            'MAR_EXTRACT_TOO_LARGE',
            `extracting ${JSON.stringify(e.name)} brings the total past ${maxTotal} bytes`,
            e.offset,
          );
        const mode = e.flags & 0o777;
        await x.writeFile(target, data, mode, e.name);
        files.push({ name: e.name, size: data.length, mode });
      }
      return files;
    } finally {
      await m.close();
    }
  });
  return { destDir: dest, files };
}

export type Compression = 'none' | 'bz2' | 'xz';

export interface CreateOptions {
  productInfo?: ProductInfo;
  /** Default 'none' (like `mar -c`, which stores what it is given). */
  compression?: Compression;
  /** xz only: put the x86 BCJ filter before LZMA2 (Mozilla's x86/x64 packaging, §9). */
  x86?: boolean;
  /** Permission bits of the MAR file. */
  mode?: number;
  /** Overrides each entry's flags (default: the input's st_mode & 0o777, like libmar). */
  flags?: number;
}

export interface CreateInput {
  /** Path of the file on disk. */
  path: string;
  /** Entry name. */
  name: string;
}

/**
 * Entries for `marsign mar create` inputs. A directory contributes its files (sorted, recursively)
 * named relative to it; a file given by a relative path keeps that path as its name (like `mar -c`),
 * a file given by an absolute path is named by its basename.
 */
export async function collectInputs(inputs: string[]): Promise<CreateInput[]> {
  const out: CreateInput[] = [];
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for (const n of (await readdir(dir)).sort()) {
      const p = join(dir, n);
      const st = await stat(p);
      if (st.isDirectory()) await walk(p, `${prefix}${n}/`);
      else if (st.isFile()) out.push({ path: p, name: prefix + n });
      else
        throw new UsageError(
          'BAD_INPUT' satisfies MarFileErrorCode,
          `${p} is not a regular file or directory`,
        );
    }
  };
  for (const input of inputs) {
    const st = await stat(input);
    if (st.isDirectory()) await walk(input, '');
    else if (st.isFile()) {
      const rel = normalize(input).split(sep).join('/');
      const name = isAbsolute(input) || unsafeNameReason(rel) ? basename(input) : rel;
      out.push({ path: input, name });
    } else
      throw new UsageError(
        'BAD_INPUT' satisfies MarFileErrorCode,
        `${input} is not a regular file or directory`,
      );
  }
  return out;
}

/** Build a modern MAR from files (in order) with libmar's layout, atomically. */
export async function createMar(
  outPath: string,
  inputs: (string | CreateInput)[],
  options: CreateOptions = {},
): Promise<MarInfo> {
  const list: CreateInput[] = [];
  for (const i of inputs) list.push(...(typeof i === 'string' ? await collectInputs([i]) : [i]));
  if (list.length === 0) throw new UsageError('BAD_INPUT' satisfies MarFileErrorCode, 'no input files');
  const compression = options.compression ?? 'none';
  const c = compression === 'none' ? undefined : await codecs();
  const settings: CodecSettings =
    compression === 'bz2'
      ? { codec: 'bz2', level: 9 }
      : { codec: 'xz', dictSize: 8 * 1024 * 1024, x86: options.x86 ?? false, check: 'crc64' };
  const w = await MarWriter.create(outPath, {
    ...(options.productInfo ? { productInfo: options.productInfo } : {}),
    ...(options.mode === undefined ? {} : { mode: options.mode }),
  });
  try {
    for (const input of list) {
      const st = await stat(input.path);
      let data: Uint8Array = await readFile(input.path);
      if (c) data = await c.compress(data, settings);
      await w.addEntry(input.name, options.flags ?? st.mode & 0o777, data);
    }
    const info = await w.finish();
    await w.commit();
    return info;
  } catch (e) {
    await w.abort();
    throw e;
  }
}
