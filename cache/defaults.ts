import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { ConfigError } from '../src/errors.js';
import { READ_FLAGS, typeOf } from './confined.js';
import { MIN_SECRET_BYTES } from './fs-store.js';
import type { CacheErrorCode } from './errors.js';

/** Name of the generated secret inside the cache root (not a two-hex-digit dir, so never scanned). */
export const SECRET_FILE_NAME = '.hmac-secret';
/** Bytes of a generated secret. */
const GENERATED_SECRET_BYTES = 32;
/** A secret file is a short hex line; anything bigger is not one. */
const MAX_SECRET_FILE_BYTES = 4096;

/**
 * The default cache root: $MARSIGN_CACHE_DIR, else $XDG_CACHE_HOME/marsign (XDG Base Directory spec:
 * only an absolute value counts), else ~/.cache/marsign.
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.MARSIGN_CACHE_DIR;
  if (explicit) return resolve(explicit);
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, 'marsign');
  return join(homedir(), '.cache', 'marsign');
}

/**
 * The remote client's blob cache (`sign-release --remote`): $MARSIGN_CLIENT_CACHE, else `blobs/` in the
 * default cache root (its own store: the signing cache never scans a directory not named by two hex digits).
 */
export function clientCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.MARSIGN_CLIENT_CACHE;
  if (explicit) return resolve(explicit);
  return join(defaultCacheDir(env), 'blobs');
}

/**
 * Read a secret file: the secret as hex on one line (whitespace around it ignored), at least
 * MIN_SECRET_BYTES bytes. Refuses a file readable by group or others, as ssh does for keys, and never
 * blocks (a FIFO is refused by its fstat, not read). `inCache`: the generated secret inside the cache
 * root, where others may be able to write, so a symlink is never followed there and the file must be
 * owned by this user (or root): nobody else can plant a secret they know. A configured secret file
 * elsewhere may be a symlink (a mounted secret often is). Errors name the path and what was wrong,
 * never the contents.
 */
export async function readSecretFile(path: string, options: { inCache?: boolean } = {}): Promise<Uint8Array> {
  const flags = options.inCache ? READ_FLAGS : READ_FLAGS & ~constants.O_NOFOLLOW;
  let fh;
  try {
    fh = await open(path, flags);
  } catch (e) {
    throw new ConfigError(
      'CACHE_SECRET_UNREADABLE' satisfies CacheErrorCode,
      code(e) === 'ELOOP'
        ? `cache secret file ${path} is a symbolic link; it is never followed inside the cache (remove it)`
        : `cannot read the cache secret file ${path}: ${code(e)}`,
      { cause: e },
    );
  }
  try {
    const st = await fh.stat();
    if (!st.isFile())
      throw new ConfigError(
        'CACHE_SECRET_UNREADABLE' satisfies CacheErrorCode,
        `cache secret ${path} is not a regular file (${typeOf(st)})`,
      );
    if (st.size > MAX_SECRET_FILE_BYTES)
      throw new ConfigError(
        'CACHE_SECRET_INVALID' satisfies CacheErrorCode,
        `cache secret file ${path} is ${st.size} bytes, expected a hex line`,
      );
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
      throw new ConfigError(
        'CACHE_SECRET_PERMISSIONS' satisfies CacheErrorCode,
        `cache secret file ${path} has mode ${(st.mode & 0o777).toString(8)}; make it private (chmod 600)`,
      );
    const uid = process.getuid?.();
    if (options.inCache && uid !== undefined && st.uid !== uid && st.uid !== 0)
      throw new ConfigError(
        'CACHE_SECRET_PERMISSIONS' satisfies CacheErrorCode,
        `cache secret file ${path} is owned by uid ${st.uid}, not by this user (uid ${uid}) or root; remove it`,
      );
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    const text = buf.toString('latin1', 0, n).trim();
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(text))
      throw new ConfigError(
        'CACHE_SECRET_INVALID' satisfies CacheErrorCode,
        `cache secret file ${path} does not hold a hex secret`,
      );
    const secret = new Uint8Array(Buffer.from(text, 'hex'));
    if (secret.length < MIN_SECRET_BYTES)
      throw new ConfigError(
        'CACHE_SECRET_TOO_SHORT' satisfies CacheErrorCode,
        `cache secret in ${path} is ${secret.length} bytes, at least ${MIN_SECRET_BYTES} are needed`,
      );
    return secret;
  } finally {
    await fh.close();
  }
}

/**
 * The secret in `<dir>/.hmac-secret`, generated (32 random bytes, mode 0600) when absent. Safe when
 * many processes start at once: each writes its own temp file and hard-links it into place, which
 * fails if another process won the race; then everyone reads the winner's secret.
 */
export async function loadOrCreateSecret(dir: string): Promise<Uint8Array> {
  const path = join(dir, SECRET_FILE_NAME);
  try {
    return await readSecretFile(path, { inCache: true });
  } catch (e) {
    if (!(e instanceof ConfigError && e.code === 'CACHE_SECRET_UNREADABLE' && code(e.cause) === 'ENOENT'))
      throw e;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `${SECRET_FILE_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  // O_EXCL already refuses a planted link at the temp name; O_NOFOLLOW says so twice.
  const fh = await open(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.writeFile(randomBytes(GENERATED_SECRET_BYTES).toString('hex') + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(temp, path);
  } catch (e) {
    if (code(e) !== 'EEXIST') throw e;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  return readSecretFile(path, { inCache: true });
}

function code(e: unknown): string {
  const c = (e as NodeJS.ErrnoException)?.code;
  return typeof c === 'string' ? c : 'error';
}
