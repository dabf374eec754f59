import { open, type FileHandle } from 'node:fs/promises';

/**
 * Random-access bytes, so format readers can follow offsets without holding a whole file in memory.
 * Format code takes this interface; only this module touches the filesystem.
 */
export interface ByteSource {
  readonly size: number;
  /** Exactly `length` bytes from `offset` (callers bounds-check against `size` first). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

export class BufferSource implements ByteSource {
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.bytes.length) {
      throw new RangeError(`read [${offset}, +${length}) outside ${this.bytes.length} bytes`);
    }
    return this.bytes.subarray(offset, offset + length);
  }
}

export class FileSource implements ByteSource {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly path: string,
    /**
     * A path that opens this same file again (for readers that take a path): `path` itself, or, for a
     * confined input (src/io/confine.ts), its descriptor's `/proc/self/fd/<n>`, valid until `close`.
     */
    readonly reopenPath: string = path,
  ) {}

  /** A source over an already opened regular file of `size` bytes (it is closed with the source). */
  static fromHandle(fh: FileHandle, size: number, path: string, reopenPath?: string): FileSource {
    return new FileSource(fh, size, path, reopenPath);
  }

  static async open(path: string): Promise<FileSource> {
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EISDIR' });
      return new FileSource(fh, st.size, path);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    // allocUnsafeSlow: not from the shared pool, so it can be transferred to a worker thread.
    return this.readInto(Buffer.allocUnsafeSlow(length), offset);
  }

  /** Fill `target` with the bytes at `offset` (a caller's reused buffer); returns it. */
  async readInto<T extends Uint8Array>(target: T, offset: number): Promise<T> {
    const length = target.length;
    if (offset < 0 || offset + length > this.size) {
      throw new RangeError(`read [${offset}, +${length}) outside ${this.size} bytes of ${this.path}`);
    }
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(target, done, length - done, offset + done);
      if (bytesRead === 0)
        throw Object.assign(new Error(`${this.path} shrank while being read`), { code: 'EIO' });
      done += bytesRead;
    }
    return target;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
