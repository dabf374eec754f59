import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ConfinedDir, Confinement } from './confine.js';

export interface AtomicFileOptions {
  /**
   * Create the temp file, rename it and sync the directory through a directory opened inside these roots
   * without following links (src/io/confine.ts); `tempPath` is then that descriptor's path.
   */
  confine?: Confinement;
}

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
    /** A confined file's directory, held open until commit or abort. */
    private readonly dir?: ConfinedDir,
  ) {}

  static async create(path: string, mode = 0o644, options: AtomicFileOptions = {}): Promise<AtomicFile> {
    const name = `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    if (options.confine) {
      const dir = await options.confine.openDir(dirname(path), { what: 'output directory' });
      try {
        const handle = await options.confine.createFile(dir, name, mode);
        return new AtomicFile(path, dir.at(name), handle, dir);
      } catch (e) {
        await dir.close();
        throw e;
      }
    }
    const tempPath = join(dirname(path), name);
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
    if (this.dir) {
      // Renamed within the directory the temp file was made in, whatever its path names now.
      try {
        await rename(this.tempPath, this.dir.at(basename(this.path)));
      } catch (e) {
        await unlink(this.tempPath).catch(() => undefined);
        await this.dir.close();
        throw e;
      }
      await this.dir.handle.sync().catch(() => undefined);
      await this.dir.close();
      return;
    }
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
    await this.dir?.close().catch(() => undefined);
  }
}

/** Write a whole file atomically. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  mode = 0o644,
  options: AtomicFileOptions = {},
): Promise<void> {
  const f = await AtomicFile.create(path, mode, options);
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
