import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CodedError } from '../errors.js';
import type { IoErrorCode } from './errors.js';
import type { ConfinedDir, Confinement } from './confine.js';

export interface AtomicFileOptions {
  /**
   * Create the temp file, rename it and sync the directory through a directory opened inside these roots
   * without following links (src/io/confine.ts); `tempPath` is then that descriptor's path.
   */
  confine?: Confinement;
}

/**
 * The temp file is created, never opened: O_EXCL (which already refuses a symlink at the name, POSIX
 * open(2)) and O_NOFOLLOW, so a planted link can never make it write elsewhere.
 */
const TEMP_FLAGS =
  constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_TRUNC | constants.O_NOFOLLOW;

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
    try {
      const handle = await open(tempPath, TEMP_FLAGS, mode);
      return new AtomicFile(path, tempPath, handle);
    } catch (e) {
      throw outputDirError(e, path);
    }
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

/**
 * The temp file's name means nothing to the user: a missing or non-directory parent is reported for the
 * output path they gave. Other errors (EACCES, ENOSPC…) pass through with their errno code.
 */
function outputDirError(e: unknown, path: string): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (code !== 'ENOENT' && code !== 'ENOTDIR') return e;
  const dir = dirname(resolve(path));
  return new CodedError(
    'OUTPUT_DIR_NOT_FOUND' satisfies IoErrorCode,
    `cannot write ${path}: its directory ${dir} ${code === 'ENOENT' ? 'does not exist' : 'is not a directory'}`,
    { details: { path: resolve(path), directory: dir } },
  );
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

/** The temp names AtomicFile makes: `.<basename>.<pid>.<12 hex>.tmp`. */
const TEMP_NAME = /^\.(.+)\.(\d{1,10})\.[0-9a-f]{12}\.tmp$/;
/**
 * A temp file of a process that is still alive is removed only once it is older than this: then the pid
 * is taken to have been reused (no writer leaves its temp untouched for a day).
 */
export const STALE_LIVE_TEMP_MS = 24 * 60 * 60 * 1000;
/** Largest pid the kernel hands out (Linux PID_MAX_LIMIT, 2^22): a bigger one names no process. */
const PID_MAX = 4_194_304;

export interface RemoveStaleTempsOptions {
  /** Only temps of these file names (e.g. an output and its manifest); default: every AtomicFile temp. */
  names?: readonly string[];
  /** The age after which even a live pid's temp is removed (default STALE_LIVE_TEMP_MS). */
  maxAgeMs?: number;
}

/**
 * Remove the AtomicFile temps in `dir` (`.<name>.<pid>.<hex>.tmp`) that a killed process left: those
 * whose pid is not alive on this host (`kill(pid, 0)` → ESRCH), and any older than `maxAgeMs`. Never
 * this process's own, nor a live process's younger one (another run writing into the same directory).
 * A pid is only known on its own host (and pid namespace): a temp written by a live process elsewhere
 * whose pid is free here is removed, which fails that process's rename (an error there, never a wrong
 * file). Only regular files (and symlinks, unlinked themselves) are removed. Returns the names removed.
 */
export async function removeStaleTemps(
  dir: string,
  options: RemoveStaleTempsOptions = {},
): Promise<string[]> {
  const names = options.names && new Set(options.names);
  const maxAgeMs = options.maxAgeMs ?? STALE_LIVE_TEMP_MS;
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const removed: string[] = [];
  for (const name of entries) {
    const m = TEMP_NAME.exec(name);
    if (!m || (names && !names.has(m[1]!))) continue;
    const pid = Number(m[2]);
    if (pid === process.pid) continue;
    const path = join(dir, name);
    try {
      const st = await lstat(path);
      if (!st.isFile() && !st.isSymbolicLink()) continue;
      if (pidAlive(pid) && Date.now() - st.mtimeMs < maxAgeMs) continue;
      await unlink(path);
      removed.push(name);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return removed;
}

/** Whether `pid` names a live process on this host (EPERM: alive, another user's). */
function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid > PID_MAX) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
