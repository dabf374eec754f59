import { AtomicFile } from '../io/atomic.js';
import { FileSource } from '../io/byte-source.js';
import type { Confinement } from '../io/confine.js';
import {
  MAR_MAX_ENTRIES,
  MAR_MAX_FILE_SIZE,
  assertSafeName,
  encodeHeaderFields,
  encodeIndex,
  marError,
  marHeaderLayout,
  signableChunks,
  type MarEntry,
  type MarHeaderLayout,
  type MarInfo,
  type ProductInfo,
  type SignatureSlot,
} from '../formats/mar/index.js';

export interface MarWriterOptions {
  productInfo?: ProductInfo;
  /** Signature slots to reserve (zero placeholders until setSignatures). Default none: count 0, like libmar. */
  signatureSlots?: SignatureSlot[];
  /** Permission bits of the output file (default 0o644). */
  mode?: number;
  /** Write the additional-section count field (default true); see MarLayoutOptions.additionalHeader. */
  additionalHeader?: boolean;
  /** Write the temp file and rename it only inside these roots, following no link (src/io/confine.ts). */
  confine?: Confinement;
}

type State = 'writing' | 'finished' | 'done';

/**
 * Streams a modern MAR to a temp file beside `path` (libmar layout: header, entries back to back, index),
 * then lets the caller hash the signed stream, fill in the signature slots and rename into place.
 * This is signmar's placeholder → hash → fill-in sequence (mar-format.md §8) done in one pass.
 */
export class MarWriter {
  private readonly entries: MarEntry[] = [];
  private readonly names = new Set<string>();
  private pos: number;
  private state: State = 'writing';
  private info: MarInfo | undefined;

  private constructor(
    private readonly file: AtomicFile,
    private readonly layout: MarHeaderLayout,
    private readonly productInfo: ProductInfo | undefined,
  ) {
    this.pos = layout.dataStart;
  }

  static async create(path: string, options: MarWriterOptions = {}): Promise<MarWriter> {
    const layout = marHeaderLayout(options);
    const file = await AtomicFile.create(
      path,
      options.mode ?? 0o644,
      options.confine ? { confine: options.confine } : {},
    );
    try {
      await file.write(layout.header, 0);
    } catch (e) {
      await file.abort();
      throw e;
    }
    return new MarWriter(file, layout, options.productInfo && { ...options.productInfo });
  }

  get tempPath(): string {
    return this.file.tempPath;
  }

  /** Append one entry's stored bytes (already compressed if wanted). Names are validated as on read. */
  async addEntry(name: string, flags: number, data: Uint8Array): Promise<void> {
    this.expect('writing');
    assertSafeName(name);
    if (this.names.has(name))
      throw marError('MAR_DUPLICATE_NAME', `duplicate entry name ${JSON.stringify(name)}`);
    if (this.entries.length >= MAR_MAX_ENTRIES)
      throw marError('MAR_TOO_MANY_ENTRIES', `more than ${MAR_MAX_ENTRIES} entries`);
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xffffffff)
      throw marError('MAR_BAD_NAME', `flags ${flags} for ${JSON.stringify(name)} are not a u32`);
    if (this.pos + data.length > MAR_MAX_FILE_SIZE)
      throw marError(
        'MAR_TOO_LARGE',
        `adding ${JSON.stringify(name)} would exceed ${MAR_MAX_FILE_SIZE} bytes`,
      );
    await this.file.write(data, this.pos);
    this.names.add(name);
    this.entries.push({ name, offset: this.pos, size: data.length, flags });
    this.pos += data.length;
  }

  /** Write the index and the header fields. Signature slots stay zero. Returns the layout of the file. */
  async finish(): Promise<MarInfo> {
    this.expect('writing');
    if (this.entries.length === 0) throw marError('MAR_EMPTY_INDEX', 'a MAR needs at least one entry');
    const index = encodeIndex(this.entries);
    const indexOffset = this.pos;
    const fileSize = indexOffset + index.length;
    if (fileSize > MAR_MAX_FILE_SIZE) throw marError('MAR_TOO_LARGE', `MAR would be ${fileSize} bytes`);
    await this.file.write(index, indexOffset);
    await this.file.write(encodeHeaderFields(indexOffset, fileSize), 0);
    const { layout } = this;
    this.info = {
      style: 'modern',
      fileSize,
      declaredFileSize: fileSize,
      indexOffset,
      signatures: layout.signatures.map((s) => ({ ...s })),
      hasAdditionalHeader: layout.hasAdditionalHeader,
      additionalSections: layout.additionalSections.map((s) => ({ ...s })),
      entries: this.entries.map((e) => ({ ...e })),
      dataStart: layout.dataStart,
    };
    if (this.productInfo) this.info.productInfo = { ...this.productInfo, padded: true };
    this.state = 'finished';
    return this.info;
  }

  /**
   * The exact stream the signatures cover, read back from the finished temp file in chunks
   * (through a second, read-only descriptor: the temp file is opened write-only).
   */
  signable(chunkSize?: number): AsyncIterable<Uint8Array> {
    this.expect('finished');
    const info = this.info!;
    const path = this.file.tempPath;
    return (async function* () {
      const src = await FileSource.open(path);
      try {
        yield* signableChunks(src, info, chunkSize);
      } finally {
        await src.close();
      }
    })();
  }

  /** pwrite the signatures into their slots; count and lengths must match the reserved slots. */
  async setSignatures(sigs: Uint8Array[]): Promise<void> {
    this.expect('finished');
    const slots = this.info!.signatures;
    if (sigs.length !== slots.length)
      throw marError('MAR_SIGNATURE_SLOT_MISMATCH', `${sigs.length} signatures for ${slots.length} slots`);
    for (const [i, s] of slots.entries()) {
      if (sigs[i]!.length !== s.length)
        throw marError(
          'MAR_SIGNATURE_SLOT_MISMATCH',
          `signature ${i} is ${sigs[i]!.length} bytes, its slot ${s.length}`,
          s.offset,
        );
    }
    for (const [i, s] of slots.entries()) await this.file.write(sigs[i]!, s.offset);
  }

  /** fsync and rename the finished MAR into place. */
  async commit(): Promise<void> {
    this.expect('finished');
    this.state = 'done';
    try {
      await this.file.commit();
    } catch (e) {
      await this.file.abort();
      throw e;
    }
  }

  /** Delete the temp file; safe at any point and more than once. */
  async abort(): Promise<void> {
    this.state = 'done';
    await this.file.abort();
  }

  private expect(state: State): void {
    if (this.state !== state)
      throw marError('MAR_WRITER_STATE', `MarWriter is ${this.state}, this call needs it ${state}`);
  }
}
