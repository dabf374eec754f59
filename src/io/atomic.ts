import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * A file written under a temporary name in the destination's directory and renamed into place only
 * when complete (fsync first). A crash or an error leaves at most a `.*.tmp` file, never a partial
 * output under the real name.
 */
export class AtomicFile {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    readonly handle: FileHandle,
  ) {}

  static async create(path: string, mode = 0o644): Promise<AtomicFile> {
    const tempPath = join(
      dirname(path),
      `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`,
    );
    const handle = await open(tempPath, 'wx', mode);
    return new AtomicFile(path, tempPath, handle);
  }

  /** Write all of `data` at `position` (or at the current end when omitted). */
  async write(data: Uint8Array, position?: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(
        data,
        done,
        data.length - done,
        position === undefined ? null : position + done,
      );
      done += bytesWritten;
    }
  }

  /** fsync, close and rename over the destination. */
  async commit(): Promise<void> {
    await this.handle.sync();
    await this.handle.close();
    this.closed = true;
    await rename(this.tempPath, this.path);
    await syncDir(dirname(this.path));
  }

  /** Close and delete the temporary file; safe to call after commit or twice. */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
      await unlink(this.tempPath).catch(() => undefined);
    }
  }
}

/** Write a whole file atomically. */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
  const f = await AtomicFile.create(path, mode);
  try {
    await f.write(typeof data === 'string' ? Buffer.from(data) : data);
    await f.commit();
  } catch (e) {
    await f.abort();
    throw e;
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  }
}
