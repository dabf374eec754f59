/**
 * The container formats, detected by content (never by file name): the pipeline, the release loader and
 * the inspection commands open every input through `openArchive`.
 */
import { FormatError } from '../errors.js';
import type { ByteSource } from '../io/byte-source.js';
import { marFormat } from './mar.js';
import { zipFormat } from './zip.js';
import { DETECT_BYTES, type ArchiveFormat, type ContainerName, type OpenedArchive } from './types.js';

export type ArchiveErrorCode = 'ARCHIVE_UNKNOWN_FORMAT';

/** In detection order. */
export const FORMATS: readonly ArchiveFormat[] = [marFormat, zipFormat];

/** The format whose magic `head` (the file's first DETECT_BYTES bytes) carries, if any. */
export function detectFormat(head: Uint8Array, fileSize: number): ArchiveFormat | undefined {
  return FORMATS.find((f) => f.detect(head, fileSize));
}

/** The format of a container by its first bytes; FormatError ARCHIVE_UNKNOWN_FORMAT when none matches. */
export async function formatOf(source: ByteSource, what = 'input'): Promise<ArchiveFormat> {
  const head = await source.read(0, Math.min(DETECT_BYTES, source.size));
  const format = detectFormat(head, source.size);
  if (!format)
    throw new FormatError(
      'archive',
      'ARCHIVE_UNKNOWN_FORMAT' satisfies ArchiveErrorCode,
      `${what} is not a ${FORMATS.map((f) => f.name).join(' or ')} archive (it starts ${Buffer.from(head).toString('hex') || '(empty)'})`,
      0,
    );
  return format;
}

/** The container's format name, by content. */
export async function detectContainer(source: ByteSource, what = 'input'): Promise<ContainerName> {
  return (await formatOf(source, what)).name;
}

/** Open a container of any supported format; FormatError ARCHIVE_UNKNOWN_FORMAT otherwise. */
export async function openArchive(source: ByteSource, what = 'input'): Promise<OpenedArchive> {
  return (await formatOf(source, what)).open(source);
}

export function formatNamed(name: ContainerName): ArchiveFormat | undefined {
  return FORMATS.find((f) => f.name === name);
}
