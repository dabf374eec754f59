/**
 * Zip as an `ArchiveFormat` (docs/ARCHITECTURE.md "Zip format"): Windows build zips (Mozilla's `target.zip`,
 * l10n repacks, CI artifacts). Entries are taken in file order (the order their local headers appear, which
 * the output keeps); the central directory keeps its own order and every record's metadata. An entry's
 * codec is its method: stored (`none`) or raw deflate. An unchanged entry is copied exactly (local header,
 * compressed bytes, descriptor); a signed one gets its new compressed bytes with only the CRC-32 and
 * sizes rewritten (zip64 forms where they need it). Zip has no container signature.
 */
import { DEFLATE_LEVEL } from '../codecs/deflate.js';
import type { CodecSettings, DecodedFacts } from '../codecs/types.js';
import {
  endTemplateOf,
  isZipMagic,
  readZip,
  ZIP_METHOD_DEFLATE,
  ZIP_METHOD_STORED,
  zipError,
  type ZipEntry,
  type ZipInfo,
} from '../formats/zip/index.js';
import type { ByteSource } from '../io/byte-source.js';
import { ZipWriter } from '../zip/writer.js';
import type {
  ArchiveEntry,
  ArchiveFormat,
  ArchiveWriter,
  ContainerSigning,
  CreateWriterOptions,
  EntryData,
  OpenedArchive,
  PredictedLayout,
  SealedArchive,
} from './types.js';

export const zipFormat: ArchiveFormat = {
  name: 'zip',
  detect: (head) => isZipMagic(head),
  open: async (source: ByteSource) => new ZipArchive(await readZip(source), source),
};

export class ZipArchive implements OpenedArchive {
  readonly format = 'zip' as const;
  readonly entries: readonly ArchiveEntry[];
  /** The zip entry behind each archive entry (same index). */
  private readonly zipEntries: readonly ZipEntry[];

  constructor(
    readonly info: ZipInfo,
    private readonly source: ByteSource,
  ) {
    this.zipEntries = [...info.entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
    this.entries = this.zipEntries.map((e, index) => ({
      index,
      name: e.name,
      offset: e.dataOffset,
      size: e.compressedSize,
    }));
  }

  codecOf(entry: ArchiveEntry): CodecSettings {
    const z = this.zipEntries[entry.index]!;
    if (z.method === ZIP_METHOD_STORED) return { codec: 'none' };
    if (z.method === ZIP_METHOD_DEFLATE) return { codec: 'deflate', level: DEFLATE_LEVEL };
    // The reader refuses other methods; this guards a caller that built entries by hand.
    throw zipError(
      'ZIP_UNSUPPORTED_METHOD',
      `${JSON.stringify(z.name)} uses method ${z.method}`,
      z.centralOffset,
    );
  }

  declaredFacts(entry: ArchiveEntry): DecodedFacts {
    const z = this.zipEntries[entry.index]!;
    return { size: z.uncompressedSize, crc32: z.crc32 };
  }

  async createWriter(
    path: string,
    _signing: ContainerSigning,
    options: CreateWriterOptions = {},
  ): Promise<ArchiveWriter> {
    const opts = { end: endTemplateOf(this.info), ...(options.confine ? { confine: options.confine } : {}) };
    return new ZipArchiveWriter(await ZipWriter.create(path, opts), this);
  }

  /** Not predicted: a signed entry's local header and central record carry its new CRC-32, known late. */
  predictLayout(): PredictedLayout | undefined {
    return undefined;
  }

  zipEntry(entry: ArchiveEntry): ZipEntry {
    return this.zipEntries[entry.index]!;
  }

  /** An unchanged entry's whole span: its local header and descriptor around `data` (no re-read of the data). */
  async span(z: ZipEntry, data: Uint8Array): Promise<Uint8Array> {
    const head = await this.source.read(z.localHeaderOffset, z.dataOffset - z.localHeaderOffset);
    const tailAt = z.dataOffset + z.compressedSize;
    const tail = z.end > tailAt ? await this.source.read(tailAt, z.end - tailAt) : new Uint8Array(0);
    const out = new Uint8Array(head.length + data.length + tail.length);
    out.set(head, 0);
    out.set(data, head.length);
    out.set(tail, head.length + data.length);
    return out;
  }
}

class ZipArchiveWriter implements ArchiveWriter {
  constructor(
    private readonly writer: ZipWriter,
    private readonly archive: ZipArchive,
  ) {}

  get tempPath(): string {
    return this.writer.tempPath;
  }

  async add(entry: ArchiveEntry, data: EntryData): Promise<void> {
    const z = this.archive.zipEntry(entry);
    if (!data.decoded) {
      await this.writer.addEntry(z, await this.archive.span(z, data.bytes));
      return;
    }
    await this.writer.addEntry(z, data.bytes, {
      crc32: data.decoded.crc32,
      uncompressedSize: data.decoded.size,
    });
  }

  async seal(): Promise<SealedArchive> {
    return { fileSize: (await this.writer.finish()).fileSize };
  }

  /** Zip has no container signature. */
  async sign(): Promise<void> {}

  commit(): Promise<void> {
    return this.writer.commit();
  }

  abort(): Promise<void> {
    return this.writer.abort();
  }
}
