import { dirname } from 'node:path';
import { CodedError } from '../errors.js';
import { DEFAULT_MAX_OUTPUT_SIZE } from '../codecs/types.js';
import { BufferSource, FileSource, type ByteSource } from '../io/byte-source.js';
import { extractInto } from '../io/extract.js';
import {
  ZIP_METHOD_DEFLATE,
  assertSafeZipName,
  endTemplateOf,
  newZipEntry,
  readEntryData,
  readZip,
  zipError,
  type NewZipEntry,
  type ReadZipOptions,
  type ZipEntry,
  type ZipInfo,
} from '../formats/zip/index.js';
import { ZipWriter, type ZipWriteResult } from './writer.js';

/** node:zlib inflate/deflate/CRC, loaded when an entry's data is decoded or encoded. */
async function deflate(): Promise<typeof import('../codecs/deflate.js')> {
  return import('../codecs/deflate.js');
}

export interface OpenZip {
  source: FileSource;
  info: ZipInfo;
  close(): Promise<void>;
}

/** Open and validate a zip file; entries are read on demand from `source`. */
export async function openZip(path: string, options: ReadZipOptions = {}): Promise<OpenZip> {
  const source = await FileSource.open(path);
  try {
    const info = await readZip(source, options);
    return { source, info, close: () => source.close() };
  } catch (e) {
    await source.close();
    throw e;
  }
}

export interface EntryContentOptions {
  /** Cap on the decoded size (default DEFAULT_MAX_OUTPUT_SIZE); the declared size is enforced too. */
  maxOutputSize?: number;
}

/**
 * An entry's uncompressed bytes, checked: a deflate entry must inflate to exactly its declared size
 * (`ZIP_SIZE_MISMATCH`: the stream stops as soon as it passes it) and the CRC-32 must match
 * (`ZIP_CRC_MISMATCH`). Inflate errors are the codec's (`CODEC_CORRUPT`, `CODEC_TRAILING_DATA`).
 */
export async function readEntryContent(
  source: ByteSource,
  entry: ZipEntry,
  options: EntryContentOptions = {},
): Promise<Uint8Array> {
  const cap = options.maxOutputSize ?? DEFAULT_MAX_OUTPUT_SIZE;
  const name = JSON.stringify(entry.name);
  if (entry.uncompressedSize > cap)
    throw zipError(
      'ZIP_ENTRY_TOO_LARGE',
      `entry ${name} declares ${entry.uncompressedSize} bytes, over the ${cap}-byte limit`,
      entry.centralOffset,
    );
  const raw = await readEntryData(source, entry);
  const z = await deflate();
  let data = raw;
  if (entry.method === ZIP_METHOD_DEFLATE) {
    try {
      // One byte over the declared size is enough to know it lies; the ratio was checked on read.
      data = await z.inflateRaw(raw, { maxOutputSize: entry.uncompressedSize + 1, maxRatio: Infinity });
    } catch (e) {
      if (e instanceof CodedError && e.code === 'CODEC_OUTPUT_TOO_LARGE')
        throw zipError(
          'ZIP_SIZE_MISMATCH',
          `entry ${name} inflates to more than its declared ${entry.uncompressedSize} bytes`,
          entry.dataOffset,
        );
      throw e;
    }
  }
  if (data.length !== entry.uncompressedSize)
    throw zipError(
      'ZIP_SIZE_MISMATCH',
      `entry ${name} inflates to ${data.length} bytes, ${entry.uncompressedSize} declared`,
      entry.dataOffset,
    );
  const crc = z.crc32(data);
  if (crc !== entry.crc32)
    throw zipError(
      'ZIP_CRC_MISMATCH',
      `entry ${name} has CRC-32 ${crc.toString(16).padStart(8, '0')}, ${entry.crc32.toString(16).padStart(8, '0')} declared`,
      entry.dataOffset,
    );
  return data;
}

/** Unix permission bits of an entry made on Unix (§4.4.2 host 3), else the usual defaults. */
export function entryMode(entry: ZipEntry): number {
  const unix = entry.versionMadeBy >> 8 === 3 ? entry.externalAttributes >>> 16 : 0;
  const perms = unix & 0o777;
  if (perms !== 0) return perms;
  return entry.isDirectory ? 0o755 : 0o644;
}

/** The entry's Unix file type says symbolic link (S_IFLNK), which extraction refuses. */
export function isSymlinkEntry(entry: ZipEntry): boolean {
  return entry.versionMadeBy >> 8 === 3 && ((entry.externalAttributes >>> 16) & 0o170000) === 0o120000;
}

/** Default cap on everything one extraction writes (as MAR_MAX_EXTRACT_TOTAL). */
export const ZIP_MAX_EXTRACT_TOTAL = 8 * 1024 * 1024 * 1024;

export interface ExtractZipOptions {
  /** Per-entry decoded-size cap (default DEFAULT_MAX_OUTPUT_SIZE, 1 GiB). */
  maxOutputSize?: number;
  /** Cap on all extracted bytes together (default ZIP_MAX_EXTRACT_TOTAL), checked on the declared sizes first. */
  maxTotalSize?: number;
}

export interface ExtractZipResult {
  destDir: string;
  files: { name: string; size: number; mode: number; directory: boolean }[];
}

/**
 * Extract every entry under `destDir` (must not exist or be an empty directory) like `extractMar`: into a
 * fresh temp directory beside it, renamed into place at the end, so a failure leaves nothing; each path
 * re-validated and resolved inside the root; no symlink in the way; files opened O_EXCL|O_NOFOLLOW; modes
 * `& 0o777`. Every entry is decoded and checked (size, CRC). Symlink entries are refused.
 */
export async function extractZip(
  path: string,
  destDir: string,
  options: ExtractZipOptions = {},
): Promise<ExtractZipResult> {
  const unsafe = (message: string, offset?: number): Error => zipError('ZIP_UNSAFE_EXTRACT', message, offset);
  const { destDir: dest, result: files } = await extractInto(destDir, unsafe, async (x) => {
    const z = await openZip(path);
    try {
      const maxTotal = options.maxTotalSize ?? ZIP_MAX_EXTRACT_TOTAL;
      const declared = z.info.entries.reduce((n, e) => n + e.uncompressedSize, 0);
      if (declared > maxTotal)
        throw zipError(
          'ZIP_EXTRACT_TOO_LARGE',
          `entries declare ${declared} bytes together, more than ${maxTotal}`,
        );
      const files: ExtractZipResult['files'] = [];
      for (const e of z.info.entries) {
        assertSafeZipName(e.name);
        if (isSymlinkEntry(e))
          throw unsafe(`${JSON.stringify(e.name)} is a symbolic link`, e.localHeaderOffset);
        const target = x.target(e.name, e.localHeaderOffset);
        const mode = entryMode(e);
        if (e.isDirectory) {
          await x.makeDirs(target, e.name);
          files.push({ name: e.name, size: 0, mode, directory: true });
          continue;
        }
        await x.makeDirs(dirname(target), e.name);
        const data = await readEntryContent(z.source, e, {
          ...(options.maxOutputSize === undefined ? {} : { maxOutputSize: options.maxOutputSize }),
        });
        await x.writeFile(target, data, mode, e.name);
        files.push({ name: e.name, size: data.length, mode, directory: false });
      }
      return files;
    } finally {
      await z.close();
    }
  });
  return { destDir: dest, files };
}

export interface CreateZipFile extends NewZipEntry {
  /** Uncompressed content (absent or empty for a directory). */
  data?: Uint8Array;
}

/**
 * Write a new zip from in-memory files, in order, atomically: deflate entries at DEFLATE_LEVEL (or as
 * given), stored entries as is, data descriptors where asked. Deterministic for the same inputs.
 */
export async function createZip(
  outPath: string,
  files: readonly CreateZipFile[],
  options: { comment?: Uint8Array; level?: number; mode?: number } = {},
): Promise<ZipWriteResult> {
  const z = await deflate();
  const w = await ZipWriter.create(outPath, {
    end: { comment: options.comment ?? new Uint8Array(0) },
    ...(options.mode === undefined ? {} : { mode: options.mode }),
  });
  try {
    for (const [i, f] of files.entries()) {
      const entry = newZipEntry(f, i);
      const data = f.data ?? new Uint8Array(0);
      const raw = entry.method === ZIP_METHOD_DEFLATE ? await z.deflateRaw(data, options.level) : data;
      await w.addEntry(entry, raw, { crc32: z.crc32(data), uncompressedSize: data.length });
    }
    const result = await w.finish();
    await w.commit();
    return result;
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/**
 * Rewrite a zip, replacing the content of the entries `transform` returns new bytes for (re-deflated at
 * DEFLATE_LEVEL, or stored as is for a stored entry); every other entry is copied byte for byte. The
 * central directory keeps its order and metadata. `transform` gets each non-directory entry's checked content.
 */
export async function rewriteZip(
  inPath: string,
  outPath: string,
  transform: (
    entry: ZipEntry,
    content: Uint8Array,
  ) => Promise<Uint8Array | undefined> | Uint8Array | undefined,
  options: {
    level?: number;
    mode?: number;
    /** Entries to decode and pass to `transform` (default every file); the others are copied undecoded. */
    select?: (entry: ZipEntry) => boolean;
  } = {},
): Promise<{ input: ZipInfo; output: ZipWriteResult; replaced: string[] }> {
  const zin = await openZip(inPath);
  const z = await deflate();
  const replaced: string[] = [];
  try {
    const w = await ZipWriter.create(outPath, {
      end: endTemplateOf(zin.info),
      ...(options.mode === undefined ? {} : { mode: options.mode }),
    });
    try {
      // Local order (what the input's bytes were in); the central directory keeps its own order.
      const physical = [...zin.info.entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
      let unchanged: ZipEntry[] = [];
      for (const e of physical) {
        const wanted = !e.isDirectory && (options.select?.(e) ?? true);
        const next = wanted ? await transform(e, await readEntryContent(zin.source, e)) : undefined;
        if (next === undefined) {
          unchanged.push(e);
          continue;
        }
        await w.copyEntries(unchanged, zin.source);
        unchanged = [];
        const raw = e.method === ZIP_METHOD_DEFLATE ? await z.deflateRaw(next, options.level) : next;
        await w.addEntry(e, raw, { crc32: z.crc32(next), uncompressedSize: next.length });
        replaced.push(e.name);
      }
      await w.copyEntries(unchanged, zin.source);
      const output = await w.finish();
      await w.commit();
      return { input: zin.info, output, replaced };
    } catch (e) {
      await w.abort();
      throw e;
    }
  } finally {
    await zin.close();
  }
}

/** Read a zip held in memory (tests, the pipeline's in-memory outputs). */
export function readZipBuffer(bytes: Uint8Array, options: ReadZipOptions = {}): Promise<ZipInfo> {
  return readZip(new BufferSource(bytes), options);
}
