import { constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, realpath, rename, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { CodedError, UsageError } from '../errors.js';
import type { IoErrorCode } from './errors.js';
import { removeOnSignal } from './signal-cleanup.js';

/**
 * Safe extraction of archive entries (extractMar, extractZip): everything goes into a fresh temp directory
 * beside the destination, renamed into place only when every entry is written, so a failure (or SIGINT,
 * SIGTERM, SIGHUP) leaves nothing.
 * Each path is resolved inside the root, parents are created one by one with lstat (no symlink or file in
 * the way), and files are opened O_EXCL|O_NOFOLLOW. `unsafe(message)` builds the format's own error.
 */
export interface ExtractRoot {
  /** Realpath of the temp directory. */
  root: string;
  /** The target path of a `/`-separated name, refused if it resolves outside the root. */
  target(name: string, offset?: number): string;
  /** Create every directory from the root down to `dir`. */
  makeDirs(dir: string, name: string): Promise<void>;
  /** Write entry `name`'s new file (O_EXCL|O_NOFOLLOW) with `mode`. */
  writeFile(target: string, data: Uint8Array, mode: number, name: string): Promise<void>;
}

/** Run `fn` over a fresh extraction root, then move it to `destDir` (which must not exist or be empty). */
export async function extractInto<T>(
  destDir: string,
  unsafe: (message: string, offset?: number) => Error,
  fn: (root: ExtractRoot) => Promise<T>,
): Promise<{ destDir: string; result: T }> {
  const dest = resolve(destDir);
  const existing = await lstat(dest).catch(() => undefined);
  if (existing && !(existing.isDirectory() && (await readdir(dest)).length === 0))
    throw new UsageError(
      'DEST_NOT_EMPTY' satisfies IoErrorCode,
      `${dest} exists and is not an empty directory`,
    );
  // The name is chosen (and the signal cleanup armed) before the directory exists, so a signal at any
  // point leaves nothing behind; mkdir fails rather than reuse an existing directory.
  const tmp = join(dirname(dest), `.${basename(dest)}.extract-${randomBytes(6).toString('hex')}`);
  const stopSignalCleanup = removeOnSignal(tmp);
  try {
    await mkdir(tmp, { mode: 0o700 });
  } catch (e) {
    stopSignalCleanup();
    // The temp directory's name means nothing to the user: name the destination they gave.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new CodedError(
        'OUTPUT_DIR_NOT_FOUND' satisfies IoErrorCode,
        `cannot extract into ${dest}: its directory ${dirname(dest)} ${code === 'ENOENT' ? 'does not exist' : 'is not a directory'}`,
        { details: { path: dest, directory: dirname(dest) } },
      );
    throw e;
  }
  // Which entry made each path (relative to the root): a clash names both entries, never the temp path.
  const madeBy = new Map<string, { name: string; kind: 'file' | 'directory' }>();
  const clash = (name: string, rel: string, want: 'file' | 'directory', offset?: number): Error => {
    const had = madeBy.get(rel);
    const what = rel.split(sep).join('/');
    if (!had)
      return unsafe(`${JSON.stringify(name)}: ${JSON.stringify(what)} is already in the destination`, offset);
    if (had.kind === 'file' && want === 'file')
      return unsafe(
        `${JSON.stringify(name)} is in the archive twice (as ${JSON.stringify(had.name)})`,
        offset,
      );
    return want === 'file'
      ? unsafe(
          `${JSON.stringify(name)} is a file where ${JSON.stringify(had.name)} (extracted before) needs the directory ${JSON.stringify(what)}`,
          offset,
        )
      : unsafe(
          `${JSON.stringify(name)} needs the directory ${JSON.stringify(what)} where ${JSON.stringify(had.name)} (extracted before) is a file`,
          offset,
        );
  };
  try {
    const root = await realpath(tmp);
    const result = await fn({
      root,
      target(name, offset) {
        const t = resolve(root, ...name.split('/').filter(Boolean));
        if (!t.startsWith(root + sep))
          throw unsafe(`${JSON.stringify(name)} resolves outside the destination`, offset);
        return t;
      },
      async makeDirs(dir, name) {
        let at = root;
        for (const seg of relative(root, dir).split(sep).filter(Boolean)) {
          at = join(at, seg);
          const st = await lstat(at).catch(() => undefined);
          if (!st) {
            await mkdir(at, { mode: 0o755 });
            madeBy.set(relative(root, at), { name, kind: 'directory' });
          } else if (st.isSymbolicLink()) throw unsafe(`a symlink is in the way of ${JSON.stringify(name)}`);
          else if (!st.isDirectory()) throw clash(name, relative(root, at), 'directory');
        }
      },
      async writeFile(target, data, mode, name) {
        const rel = relative(root, target);
        let fh;
        try {
          fh = await open(
            target,
            constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
            mode,
          );
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'EEXIST' || code === 'EISDIR' || code === 'ELOOP') throw clash(name, rel, 'file');
          throw new CodedError(code ?? 'EIO', `cannot extract ${JSON.stringify(name)}: ${code ?? 'error'}`, {
            cause: e,
          });
        }
        madeBy.set(rel, { name, kind: 'file' });
        try {
          await fh.writeFile(data);
          await fh.chmod(mode);
        } finally {
          await fh.close();
        }
      },
    });
    if (existing) await rmdir(dest);
    await rename(tmp, dest);
    return { destDir: dest, result };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    stopSignalCleanup();
  }
}
