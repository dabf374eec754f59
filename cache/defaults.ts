import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { ConfigError } from '../src/errors.js';
import { MIN_SECRET_BYTES } from './fs-store.js';

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
 * MIN_SECRET_BYTES bytes. Refuses a file readable by group or others, as ssh does for keys.
 * Errors name the path and what was wrong, never the contents.
 */
export async function readSecretFile(path: string): Promise<Uint8Array> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw new ConfigError(
      'CACHE_SECRET_UNREADABLE',
      `cannot read the cache secret file ${path}: ${code(e)}`,
      {
        cause: e,
      },
    );
  }
  if (!st.isFile()) throw new ConfigError('CACHE_SECRET_UNREADABLE', `cache secret ${path} is not a file`);
  if (st.size > MAX_SECRET_FILE_BYTES)
    throw new ConfigError(
      'CACHE_SECRET_INVALID',
      `cache secret file ${path} is ${st.size} bytes, expected a hex line`,
    );
  if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
    throw new ConfigError(
      'CACHE_SECRET_PERMISSIONS',
      `cache secret file ${path} has mode ${(st.mode & 0o777).toString(8)}; make it private (chmod 600)`,
    );
  const text = (await readFile(path, 'latin1')).trim();
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(text))
    throw new ConfigError('CACHE_SECRET_INVALID', `cache secret file ${path} does not hold a hex secret`);
  const secret = new Uint8Array(Buffer.from(text, 'hex'));
  if (secret.length < MIN_SECRET_BYTES)
    throw new ConfigError(
      'CACHE_SECRET_TOO_SHORT',
      `cache secret in ${path} is ${secret.length} bytes, at least ${MIN_SECRET_BYTES} are needed`,
    );
  return secret;
}

/**
 * The secret in `<dir>/.hmac-secret`, generated (32 random bytes, mode 0600) when absent. Safe when
 * many processes start at once: each writes its own temp file and hard-links it into place, which
 * fails if another process won the race; then everyone reads the winner's secret.
 */
export async function loadOrCreateSecret(dir: string): Promise<Uint8Array> {
  const path = join(dir, SECRET_FILE_NAME);
  try {
    return await readSecretFile(path);
  } catch (e) {
    if (!(e instanceof ConfigError && e.code === 'CACHE_SECRET_UNREADABLE' && code(e.cause) === 'ENOENT'))
      throw e;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `${SECRET_FILE_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(temp, 'wx', 0o600);
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
  return readSecretFile(path);
}

function code(e: unknown): string {
  const c = (e as NodeJS.ErrnoException)?.code;
  return typeof c === 'string' ? c : 'error';
}
