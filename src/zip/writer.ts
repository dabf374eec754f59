import { AtomicFile } from '../io/atomic.js';
import type { Confinement } from '../io/confine.js';
import type { ByteSource } from '../io/byte-source.js';
import {
  OutputEntrySet,
  ZIP_MAX_FILE_SIZE,
  encodeTail,
  placeEntry,
  zipError,
  type ZipEndTemplate,
  type ZipEntry,
  type ZipPlacedEntry,
  type ZipReplacement,
} from '../formats/zip/index.js';

export interface ZipWriterOptions {
  /** What the end records keep (comment, zip64 forms): `endTemplateOf(input)` for a rewrite. Default: no comment. */
  end?: ZipEndTemplate;
  /** Permission bits of the output file (default 0o644). */
  mode?: number;
  /** Write the temp file and rename it only inside these roots, following no link (src/io/confine.ts). */
  confine?: Confinement;
}

export interface ZipWriteResult {
  entries: ZipPlacedEntry[];
  centralDirectoryOffset: number;
  centralDirectorySize: number;
  fileSize: number;
}

type State = 'writing' | 'finished' | 'done';

/** Chunk size for copying unchanged entries from a source (bounded memory for large entries). */
const COPY_CHUNK = 1024 * 1024;
/**
 * Writes smaller than this are gathered into one buffer and written together: a zip of many small
 * entries would otherwise cost a few positioned writes per entry (70000 entries: minutes on a busy disk).
 */
const WRITE_BUFFER = 1024 * 1024;

/**
 * Streams a zip to a temp file beside `path` (src/io/atomic.ts): entries back to back in `addEntry` order,
 * then `finish()` writes the central directory in the entries' original central order with their
 * original metadata, and the end records with the archive comment; `commit()` fsyncs and renames.
 * The bytes are exactly those `zipLayout` (src/formats/zip/layout.ts) predicts for the same entries.
 */
export class ZipWriter {
  private readonly placed: ZipPlacedEntry[] = [];
  private readonly set = new OutputEntrySet();
  private pos = 0;
  private state: State = 'writing';
  private readonly buffer = new Uint8Array(WRITE_BUFFER);
  private buffered = 0;
  /** File offset of buffer[0]; everything before it is on disk. */
  private flushed = 0;

  private constructor(
    private readonly file: AtomicFile,
    private readonly end: ZipEndTemplate,
  ) {}

  static async create(path: string, options: ZipWriterOptions = {}): Promise<ZipWriter> {
    const file = await AtomicFile.create(
      path,
      options.mode ?? 0o644,
      options.confine ? { confine: options.confine } : {},
    );
    return new ZipWriter(file, options.end ?? { comment: new Uint8Array(0) });
  }

  get tempPath(): string {
    return this.file.tempPath;
  }

  /**
   * Add one entry. Unchanged (no `replaced`): `raw` is the entry's whole span from the input (local
   * header, compressed data, descriptor: `readEntrySpan`), written byte for byte. Replaced: `raw` is the
   * new compressed data, and the local header and descriptor are the input's with only the CRC and sizes
   * (and zip64 forms where a size needs them) changed.
   */
  async addEntry(
    entry: ZipEntry,
    raw: Uint8Array,
    replaced?: Omit<ZipReplacement, 'compressedSize'>,
  ): Promise<ZipPlacedEntry> {
    this.expect('writing');
    const p = placeEntry(
      { entry, ...(replaced ? { replacement: { ...replaced, compressedSize: raw.length } } : {}) },
      this.pos,
    );
    if (!replaced && raw.length !== p.length)
      throw zipError(
        'ZIP_WRITER_STATE',
        `unchanged entry ${JSON.stringify(entry.name)} is ${p.length} bytes, ${raw.length} given`,
      );
    this.reserve(entry, p.length);
    if (p.localHeader) {
      await this.write(p.localHeader);
      await this.write(raw);
      if (p.descriptor) await this.write(p.descriptor);
    } else await this.write(raw);
    return this.commitPlaced(p);
  }

  /** Add an unchanged entry by copying its span from `source` in 1 MiB chunks. */
  async copyEntry(entry: ZipEntry, source: ByteSource): Promise<ZipPlacedEntry> {
    this.expect('writing');
    const p = placeEntry({ entry }, this.pos);
    if (entry.end > source.size)
      throw zipError(
        'ZIP_ENTRY_OUT_OF_BOUNDS',
        `entry ${JSON.stringify(entry.name)} ends past the source`,
        entry.end,
      );
    this.reserve(entry, p.length);
    for (let done = 0; done < p.length; done += COPY_CHUNK) {
      const n = Math.min(COPY_CHUNK, p.length - done);
      await this.write(await source.read(entry.localHeaderOffset + done, n));
    }
    return this.commitPlaced(p);
  }

  /**
   * Add unchanged entries that lie back to back in `source` (each starts where the previous ends), with
   * one read per 1 MiB rather than one per entry.
   */
  async copyEntries(entries: readonly ZipEntry[], source: ByteSource): Promise<ZipPlacedEntry[]> {
    this.expect('writing');
    const out: ZipPlacedEntry[] = [];
    let i = 0;
    while (i < entries.length) {
      let j = i + 1;
      while (j < entries.length && entries[j]!.localHeaderOffset === entries[j - 1]!.end) j++;
      const run = entries.slice(i, j);
      const start = run[0]!.localHeaderOffset;
      const end = run[run.length - 1]!.end;
      if (end > source.size)
        throw zipError('ZIP_ENTRY_OUT_OF_BOUNDS', `entries up to ${end} end past the source`, end);
      const placed = run.map((e) => {
        const p = placeEntry({ entry: e }, this.pos);
        this.reserve(e, p.length);
        return this.commitPlaced(p);
      });
      for (let at = start; at < end; at += COPY_CHUNK)
        await this.write(await source.read(at, Math.min(COPY_CHUNK, end - at)));
      out.push(...placed);
      i = j;
    }
    return out;
  }

  /** Write the central directory and end records. Returns where everything went. */
  async finish(): Promise<ZipWriteResult> {
    this.expect('writing');
    const { centralDirectorySize, tail } = encodeTail(this.placed, this.end, this.pos);
    const fileSize = this.pos + tail.length;
    if (fileSize > ZIP_MAX_FILE_SIZE) throw zipError('ZIP_TOO_LARGE', `zip would be ${fileSize} bytes`);
    await this.write(tail);
    await this.flush();
    this.state = 'finished';
    return { entries: [...this.placed], centralDirectoryOffset: this.pos, centralDirectorySize, fileSize };
  }

  /** fsync and rename the finished zip into place. */
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

  /** Append at the end of what was written (entries are always appended in order). */
  private async write(data: Uint8Array): Promise<void> {
    if (this.buffered + data.length > WRITE_BUFFER) await this.flush();
    if (data.length >= WRITE_BUFFER) {
      await this.file.write(data, this.flushed);
      this.flushed += data.length;
      return;
    }
    this.buffer.set(data, this.buffered);
    this.buffered += data.length;
  }

  private async flush(): Promise<void> {
    if (this.buffered === 0) return;
    await this.file.write(this.buffer.subarray(0, this.buffered), this.flushed);
    this.flushed += this.buffered;
    this.buffered = 0;
  }

  private reserve(entry: ZipEntry, length: number): void {
    if (this.pos + length > ZIP_MAX_FILE_SIZE)
      throw zipError(
        'ZIP_TOO_LARGE',
        `adding ${JSON.stringify(entry.name)} would exceed ${ZIP_MAX_FILE_SIZE} bytes`,
      );
    this.set.add(entry);
  }

  private commitPlaced(p: ZipPlacedEntry): ZipPlacedEntry {
    this.placed.push(p);
    this.pos += p.length;
    return p;
  }

  private expect(state: State): void {
    if (this.state !== state)
      throw zipError('ZIP_WRITER_STATE', `ZipWriter is ${this.state}, this call needs it ${state}`);
  }
}
