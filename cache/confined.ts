/**
 * Filesystem primitives that keep the cache inside its root when someone else can write to the cache
 * volume (docs/ARCHITECTURE.md "Cache", "Hostile cache volume"): no symlink below the root is ever
 * followed, no open blocks (a FIFO), and every write, rename and unlink happens in a directory whose
 * real location was checked.
 *
 * Node has no openat(2), so on Linux a directory is opened (O_DIRECTORY | O_NOFOLLOW), its real path
 * checked through /proc/self/fd/N, and every operation in it goes through `/proc/self/fd/N/<name>`: the
 * kernel resolves that magic link to the very directory opened, so swapping the directory for a symlink
 * after the check changes nothing (the openat idea, as in systemd's FORMAT_PROC_FD_PATH). Without
 * /proc (macOS, a dev machine) the same checks are made just before use on the plain path: best effort,
 * documented.
 */
import { constants, existsSync, type Dirent, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Read-only, never following a final symlink (ELOOP), never waiting for a FIFO's writer or taking a
 * terminal as the controlling one. A non-blocking open of a regular file reads as usual.
 */
export const READ_FLAGS =
  constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW | constants.O_NOCTTY;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
/** Directory trees planted where a file belongs are removed at most this deep (fds are held per level). */
export const MAX_REMOVE_DEPTH = 32;

const PROC_FD = '/proc/self/fd';
let procFd: boolean | undefined;
/** Whether /proc/self/fd resolves open files (Linux): the race-free path. */
export function hasProcFd(): boolean {
  return (procFd ??= process.platform === 'linux' && existsSync(PROC_FD));
}

/** What is at a path that should hold a regular file or a directory, for reports. */
export type PathType =
  'file' | 'directory' | 'symlink' | 'fifo' | 'socket' | 'block-device' | 'char-device' | 'unknown';

export function typeOf(st: Stats | Dirent): PathType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isBlockDevice()) return 'block-device';
  if (st.isCharacterDevice()) return 'char-device';
  return 'unknown';
}

/** An open directory and the path through which to reach names inside it. */
export interface DirRef {
  fh: FileHandle;
  /** `/proc/self/fd/N` on Linux, else the checked plain path. */
  path: string;
  /** The directory's real path (for messages). */
  real: string;
}

export type OpenDirResult =
  | { ok: true; dir: DirRef }
  /** Nothing there (or a parent missing). */
  | { ok: false; why: 'absent' }
  /** A symlink, a file, a FIFO… where a directory should be; `st` from lstat when still there. */
  | { ok: false; why: 'not-a-directory'; st?: Stats }
  /** It opened, but is not at `path` (a directory above it was swapped for a symlink meanwhile). */
  | { ok: false; why: 'elsewhere'; at: string };

/**
 * Open the directory at `path` without following a symlink in its last component, and check that it
 * really is `real` (default `path`: an absolute path whose parents were resolved by realpath; a
 * `/proc/self/fd/N/<name>` path gives the expected real path apart).
 */
export async function openDir(path: string, real = path): Promise<OpenDirResult> {
  let fh: FileHandle;
  try {
    fh = await open(path, DIR_FLAGS);
  } catch (e) {
    const c = errno(e);
    if (c === 'ENOENT') return { ok: false, why: 'absent' };
    if (c === 'ENOTDIR' || c === 'ELOOP') {
      const st = await lstat(path).catch(() => undefined);
      return st ? { ok: false, why: 'not-a-directory', st } : { ok: false, why: 'absent' };
    }
    throw e;
  }
  try {
    if (hasProcFd()) {
      const at = await readlink(`${PROC_FD}/${fh.fd}`);
      if (at !== real) {
        await fh.close();
        return { ok: false, why: 'elsewhere', at };
      }
      return { ok: true, dir: { fh, path: `${PROC_FD}/${fh.fd}`, real } };
    }
    // No /proc: the directory opened must be the one the path names now (same inode, not a link).
    const [held, now] = await Promise.all([fh.stat(), lstat(path)]);
    if (!now.isDirectory() || held.ino !== now.ino || held.dev !== now.dev) {
      await fh.close();
      return { ok: false, why: 'elsewhere', at: path };
    }
    return { ok: true, dir: { fh, path, real } };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Errors raised on a `/proc/self/fd/N/…` path name the directory's real path instead, so messages
 * say where the cache is.
 */
export function realiseError(e: unknown, dir: DirRef): unknown {
  if (dir.path === dir.real || !(e instanceof Error)) return e;
  const err = e as NodeJS.ErrnoException & { dest?: string };
  const fix = (s: string): string => s.split(dir.path).join(dir.real);
  err.message = fix(err.message);
  if (typeof err.path === 'string') err.path = fix(err.path);
  if (typeof err.dest === 'string') err.dest = fix(err.dest);
  return err;
}

/**
 * Remove `name` from the open directory `dir`: unlink anything that is not a directory (a symlink
 * itself, never its target); a directory is emptied the same way, each level opened with O_NOFOLLOW
 * and walked through its own descriptor, so no swap of a subdirectory for a symlink can make this
 * delete outside it. Missing is fine; a tree deeper than MAX_REMOVE_DEPTH is an error (ETOODEEP).
 */
export async function removeEntry(dir: DirRef, name: string, depth = 0): Promise<void> {
  const path = join(dir.path, name);
  let st: Stats;
  try {
    st = await lstat(path);
  } catch (e) {
    if (errno(e) === 'ENOENT') return;
    throw e;
  }
  if (!st.isDirectory()) {
    await unlink(path).catch(ignoreMissing);
    return;
  }
  if (depth >= MAX_REMOVE_DEPTH)
    throw Object.assign(
      new Error(`directory tree deeper than ${MAX_REMOVE_DEPTH} levels at ${join(dir.real, name)}`),
      { code: 'ETOODEEP' },
    );
  const opened = await openDir(path, join(dir.real, name));
  if (!opened.ok) {
    if (opened.why === 'not-a-directory') await unlink(path).catch(ignoreMissing);
    return;
  }
  const sub = opened.dir;
  try {
    for (const child of await readdir(sub.path)) await removeEntry(sub, child, depth + 1);
  } finally {
    await sub.fh.close();
  }
  await rmdir(path).catch(ignoreMissing);
}

function ignoreMissing(e: unknown): void {
  if (errno(e) !== 'ENOENT') throw e;
}

export function errno(e: unknown): string | undefined {
  const c = (e as NodeJS.ErrnoException)?.code;
  return typeof c === 'string' ? c : undefined;
}
