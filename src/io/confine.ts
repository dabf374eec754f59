/**
 * Path confinement at open time (docs/OPERATIONS.md "Threat model"). `validateRelease` checks a
 * release's paths against `server.roots` when it is submitted; a worker runs the job later, and by then a
 * path may have become a symbolic link out of the roots. So the worker opens every file of a locale —
 * input, output directory, temp files, manifest — through a `Confinement`:
 *
 * - the walk starts at the (real) root that holds the path and opens one component at a time with
 *   `O_NOFOLLOW` (directories `O_DIRECTORY`), each relative to the previous component's descriptor: a
 *   symbolic link anywhere below a root is refused, not followed (submit time already resolved every link,
 *   so a link met here appeared afterwards);
 * - files are then created, opened, renamed and removed relative to the final directory's descriptor, so
 *   swapping a path component for a link after the walk changes nothing for this job;
 * - an input is opened `O_NONBLOCK` (a FIFO does not hang the open) and must be a regular file;
 * - each descriptor's real path is read back and checked inside the roots (a directory moved out of
 *   the roots after submit is refused).
 *
 * Node has no `openat`/`renameat`/`mkdirat`; Linux's `/proc/self/fd/<n>/<name>` gives the same
 * semantics (the kernel resolves `/proc/self/fd/<n>` to the descriptor's own directory, whatever its path
 * now names). That is the platform assumption: `Confinement.create` fails closed
 * (`CONFINEMENT_UNSUPPORTED`) where `/proc/self/fd` does not behave so.
 *
 * What remains (documented in OPERATIONS.md): a directory moved out of the roots between the final
 * check and the rename still receives the output; a hard link inside a root is its own path (the
 * kernel's `protected_hardlinks` limits who can make one).
 */
import { constants as C } from 'node:fs';
import { lstat, mkdir, open, readlink, realpath, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { ConfigError, PolicyError } from '../errors.js';
import { FileSource } from './byte-source.js';

export type ConfinementErrorCode =
  'PATH_ESCAPE' | 'PATH_NOT_FILE' | 'PATH_NOT_DIRECTORY' | 'CONFINEMENT_UNSUPPORTED' | 'CONFIG_INVALID';

/** Where the kernel lists this process's descriptors (Linux). */
const FD_DIR = '/proc/self/fd';
/** What readlink of a descriptor says of a file removed since it was opened. */
const DELETED = ' (deleted)';

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
/** An input: read-only, the final component not followed, no blocking on a FIFO, no controlling tty. */
const INPUT_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY;
/** A new temp file: created here or not at all (`O_EXCL` never follows a link; O_NOFOLLOW says so). */
const CREATE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;

function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** The real path of an open descriptor. */
function fdPath(fh: FileHandle): Promise<string> {
  return readlink(`${FD_DIR}/${fh.fd}`);
}

/** A directory opened inside the roots; names in it resolve through its descriptor. */
export class ConfinedDir {
  private closed = false;

  constructor(
    /** The path it was asked for. */
    readonly path: string,
    /** Its real path when it was opened. */
    readonly real: string,
    readonly handle: FileHandle,
  ) {}

  /** A path naming this very directory for as long as it is open (whatever `path` names meanwhile). */
  get pinned(): string {
    return `${FD_DIR}/${this.handle.fd}`;
  }

  /** `name` (one component) in this directory, through the descriptor. */
  at(name: string): string {
    if (name === '' || name === '.' || name === '..' || name.includes('/'))
      throw new PolicyError(
        'PATH_ESCAPE' satisfies ConfinementErrorCode,
        `${JSON.stringify(name)} is not a file name`,
      );
    return `${this.pinned}/${name}`;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

export class Confinement {
  private constructor(
    /**
     * Real paths of the roots, shortest first: the outermost root that holds a path is where its walk
     * starts, so a nested root swapped for a link by whoever writes the outer one is refused too.
     */
    readonly roots: readonly string[],
  ) {}

  /**
   * Roots as configured (absolute, or relative to the working directory); each is resolved to its real
   * path now, as `validateRelease` does at submit time. Fails closed where `/proc/self/fd` cannot pin
   * a directory.
   */
  static async create(roots: readonly string[]): Promise<Confinement> {
    if (roots.length === 0)
      throw new ConfigError(
        'CONFIG_INVALID' satisfies ConfinementErrorCode,
        'a confinement needs at least one root',
      );
    const real = await Promise.all(
      roots.map((r) =>
        realpath(resolve(r)).catch((e: unknown) => {
          if (errno(e) === 'ENOENT') return resolve(r);
          throw e;
        }),
      ),
    );
    await probe();
    return new Confinement([...new Set(real)].sort((a, b) => a.length - b.length));
  }

  /** The root that holds `path` (lexically, after `resolve`), or PATH_ESCAPE. */
  rootOf(path: string, what = 'path'): string {
    const abs = resolve(path);
    const root = this.roots.find((r) => inside(r, abs));
    if (root === undefined)
      throw escape(`${what} ${abs} is outside the configured roots (${this.roots.join(', ')})`, {
        path: abs,
      });
    return root;
  }

  /**
   * Open directory `dir` by walking from its root one component at a time, following no link. With
   * `create`, missing components are made (mode 0o777 less the umask, as `mkdir -p`).
   */
  async openDir(dir: string, opts: { create?: boolean; what?: string } = {}): Promise<ConfinedDir> {
    const abs = resolve(dir);
    const what = opts.what ?? 'directory';
    const root = this.rootOf(abs, what);
    const parts = relative(root, abs)
      .split(sep)
      .filter((p) => p !== '');
    // The root itself is the operator's (config): its own path may hold links.
    let cur = await open(root, C.O_RDONLY | C.O_DIRECTORY);
    let curPath = root;
    try {
      for (const part of parts) {
        const next = resolve(curPath, part);
        const at = `${FD_DIR}/${cur.fd}/${part}`;
        let h: FileHandle;
        try {
          h = await open(at, DIR_FLAGS);
        } catch (e) {
          if (errno(e) !== 'ENOENT' || !opts.create) throw await this.refusal(e, at, next, abs, what);
          // mkdir never follows a link in its last component (EEXIST); the open below re-checks.
          await mkdir(at, 0o777).catch((m: unknown) => {
            if (errno(m) !== 'EEXIST') throw m;
          });
          try {
            h = await open(at, DIR_FLAGS);
          } catch (e2) {
            throw await this.refusal(e2, at, next, abs, what);
          }
        }
        await cur.close();
        cur = h;
        curPath = next;
      }
      const real = await this.check(cur, abs, what);
      return new ConfinedDir(abs, real, cur);
    } catch (e) {
      await cur.close().catch(() => undefined);
      throw e;
    }
  }

  /**
   * Open an input for reading: its directory walked as in `openDir`, the file itself not followed if it
   * is a link, not blocking if it is a FIFO, and refused unless it is a regular file inside the roots.
   * The source's `reopenPath` opens the same file again (not whatever `path` names later).
   */
  async openInput(path: string, what = 'input'): Promise<FileSource> {
    const abs = resolve(path);
    const dir = await this.openDir(dirname(abs), { what });
    try {
      const at = dir.at(basename(abs));
      let fh: FileHandle;
      try {
        fh = await open(at, INPUT_FLAGS);
      } catch (e) {
        throw await this.refusal(e, at, abs, abs, what);
      }
      try {
        const st = await fh.stat();
        if (!st.isFile())
          throw new PolicyError(
            'PATH_NOT_FILE' satisfies ConfinementErrorCode,
            `${what} ${abs} is not a regular file (${kindOf(st)})`,
            { details: { path: abs } },
          );
        await this.check(fh, abs, what);
        return FileSource.fromHandle(fh, st.size, abs, `${FD_DIR}/${fh.fd}`);
      } catch (e) {
        await fh.close();
        throw e;
      }
    } finally {
      await dir.close();
    }
  }

  /** Create a new file `name` in `dir` (never an existing one, never through a link), checked inside. */
  async createFile(dir: ConfinedDir, name: string, mode: number): Promise<FileHandle> {
    const at = dir.at(name);
    const fh = await open(at, CREATE_FLAGS, mode);
    try {
      await this.check(fh, resolve(dir.path, name), 'temp file');
      return fh;
    } catch (e) {
      await fh.close();
      await unlink(at).catch(() => undefined);
      throw e;
    }
  }

  /** The descriptor's real path, which must lie inside a root. */
  private async check(fh: FileHandle, path: string, what: string): Promise<string> {
    const real = await fdPath(fh);
    if (real.endsWith(DELETED) || !isAbsolute(real))
      throw escape(`${what} ${path} was removed or replaced while it was opened (now ${real})`, {
        path,
        resolved: real,
      });
    if (!this.roots.some((r) => inside(r, real)))
      throw escape(
        `${what} ${path} resolves to ${real}, outside the configured roots (${this.roots.join(', ')})`,
        { path, resolved: real },
      );
    return real;
  }

  /** The error for a failed open of `component` (at `at`): a link or a non-directory is a refusal. */
  private async refusal(
    e: unknown,
    at: string,
    component: string,
    path: string,
    what: string,
  ): Promise<unknown> {
    const code = errno(e);
    if (code !== 'ELOOP' && code !== 'ENOTDIR' && code !== 'EMLINK') return e;
    const st = await lstat(at).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      const target = await readlink(at).catch(() => '?');
      const resolved = await realpath(component).catch(() => undefined);
      const where = component === path ? `${what} ${path}` : `${what} ${path}: ${component}`;
      return escape(
        `${where} is a symbolic link to ${target}` +
          (resolved ? ` (resolves to ${resolved})` : '') +
          '; links below the configured roots are not followed when a job runs',
        { path, component, target, ...(resolved ? { resolved } : {}) },
      );
    }
    if (code === 'ENOTDIR')
      return new PolicyError(
        'PATH_NOT_DIRECTORY' satisfies ConfinementErrorCode,
        `${what} ${path}: ${component} is not a directory`,
        { details: { path, component } },
      );
    return e;
  }
}

function escape(message: string, details: Record<string, unknown>): PolicyError {
  return new PolicyError('PATH_ESCAPE' satisfies ConfinementErrorCode, message, { details });
}

function kindOf(st: {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
}): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a file';
}

let probed: Promise<void> | undefined;

/**
 * Whether `/proc/self/fd/<n>` names an open directory and resolves names in it: open the filesystem
 * root, read its descriptor's path back and look `.` up through it.
 */
function probe(): Promise<void> {
  probed ??= (async () => {
    const fail = (why: string): never => {
      throw new ConfigError(
        'CONFINEMENT_UNSUPPORTED' satisfies ConfinementErrorCode,
        `path confinement needs Linux's ${FD_DIR} (${why}); refusing to run jobs unconfined`,
      );
    };
    if (process.platform !== 'linux') fail(`platform is ${process.platform}`);
    const fh = await open('/', C.O_RDONLY | C.O_DIRECTORY);
    try {
      const real = await fdPath(fh).catch((e: unknown) => fail(`readlink: ${errno(e) ?? String(e)}`));
      if (real !== '/') fail(`descriptor of / reads back as ${real}`);
      const st = await lstat(`${FD_DIR}/${fh.fd}/.`).catch((e: unknown) =>
        fail(`lookup through a descriptor: ${errno(e) ?? String(e)}`),
      );
      if (!st.isDirectory()) fail('lookup through a descriptor is not the directory');
    } finally {
      await fh.close();
    }
  })();
  probed.catch(() => (probed = undefined));
  return probed;
}
