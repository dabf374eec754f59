/**
 * MAR as an `ArchiveFormat` (../shared/docs/mar-format.md): entries are complete bzip2/xz streams (or raw
 * bytes), so an entry's codec is sniffed from its bytes; the output keeps the input's order, flags,
 * product information and additional-header form, and gets one MAR signature per profile key, computed
 * over the exact signed stream (§8): by the caller holding the output's bytes (`signedRanges`), or here,
 * from those bytes or read back from the temp file.
 */
import { createHash } from 'node:crypto';
import { readSettings } from '../codecs/index.js';
import type { CodecSettings } from '../codecs/types.js';
import {
  encodeHeaderFields,
  encodeIndex,
  MAR_MAGIC,
  marHeaderLayout,
  readMar,
  signableRanges,
} from '../formats/mar/index.js';
import type { MarEntry, MarInfo } from '../formats/mar/types.js';
import type { ByteSource } from '../io/byte-source.js';
import { MarWriter, type MarWriterOptions } from '../mar/writer.js';
import { marSignatureSlots, signWriter } from '../signing/mar-signer.js';
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

export const marFormat: ArchiveFormat = {
  name: 'mar',
  detect: (head) =>
    head.length >= 4 && Buffer.from(head.buffer, head.byteOffset, 4).readUInt32BE(0) === MAR_MAGIC,
  open: async (source: ByteSource) => new MarArchive(await readMar(source)),
};

export class MarArchive implements OpenedArchive {
  readonly format = 'mar' as const;
  readonly entries: readonly ArchiveEntry[];

  constructor(readonly info: MarInfo) {
    this.entries = info.entries.map((e, index) => ({
      index,
      name: e.name,
      offset: e.offset,
      size: e.size,
      flags: e.flags,
    }));
  }

  codecOf(_entry: ArchiveEntry, stored: Uint8Array): CodecSettings {
    return readSettings(stored);
  }

  private writerOptions(signing: ContainerSigning): MarWriterOptions {
    const { info } = this;
    return {
      additionalHeader: info.hasAdditionalHeader,
      ...(info.productInfo
        ? { productInfo: { channel: info.productInfo.channel, version: info.productInfo.version } }
        : {}),
      ...(signing.mar
        ? { signatureSlots: marSignatureSlots([...signing.mar.keys], signing.mar.algorithm) }
        : {}),
    };
  }

  async createWriter(
    path: string,
    signing: ContainerSigning,
    options: CreateWriterOptions = {},
  ): Promise<ArchiveWriter> {
    const opts = { ...this.writerOptions(signing), ...(options.confine ? { confine: options.confine } : {}) };
    return new MarArchiveWriter(await MarWriter.create(path, opts), signing);
  }

  predictLayout(sizes: readonly number[], signing: ContainerSigning): PredictedLayout {
    const layout = marHeaderLayout(this.writerOptions(signing));
    let offset = layout.dataStart;
    const predicted: MarEntry[] = this.entries.map((e, i) => {
      const r = { name: e.name, offset, size: sizes[i]!, flags: e.flags ?? 0o644 };
      offset += sizes[i]!;
      return r;
    });
    const index = encodeIndex(predicted);
    const indexOffset = offset;
    const fileSize = offset + index.length;
    const head = Buffer.from(layout.header);
    head.set(encodeHeaderFields(indexOffset, fileSize), 0);
    return {
      fileSize,
      slots: predicted.map((e) => ({ offset: e.offset, size: e.size })),
      segments: [
        { offset: 0, bytes: head },
        { offset: indexOffset, bytes: index },
      ],
    };
  }
}

class MarArchiveWriter implements ArchiveWriter {
  private info: MarInfo | undefined;

  constructor(
    private readonly writer: MarWriter,
    private readonly signing: ContainerSigning,
  ) {}

  get tempPath(): string {
    return this.writer.tempPath;
  }

  add(entry: ArchiveEntry, data: EntryData): Promise<void> {
    return this.writer.addEntry(entry.name, entry.flags ?? 0o644, data.bytes);
  }

  async seal(): Promise<SealedArchive> {
    this.info = await this.writer.finish();
    return { fileSize: this.info.fileSize };
  }

  signedRanges(): { algorithm: string; ranges: { offset: number; length: number }[] } | undefined {
    const mar = this.signing.mar;
    return mar ? { algorithm: mar.algorithm, ranges: signableRanges(this.info!) } : undefined;
  }

  async sign(whole?: Buffer, digest?: Uint8Array): Promise<void> {
    const mar = this.signing.mar;
    const info = this.info!;
    if (!mar) return;
    const keys = [...mar.keys];
    if (!whole && !digest) {
      await signWriter(this.writer, keys, mar.algorithm);
      return;
    }
    if (!digest) {
      const h = createHash(mar.algorithm);
      for (const r of signableRanges(info)) h.update(whole!.subarray(r.offset, r.offset + r.length));
      digest = new Uint8Array(h.digest());
    }
    const sigs = await Promise.all(keys.map((k) => k.signDigest(mar.algorithm, digest)));
    await this.writer.setSignatures(sigs);
    if (whole) for (const [i, slot] of info.signatures.entries()) whole.set(sigs[i]!, slot.offset);
  }

  commit(): Promise<void> {
    return this.writer.commit();
  }

  abort(): Promise<void> {
    return this.writer.abort();
  }
}
