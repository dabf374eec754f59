/**
 * What `sign-release --remote` and `enqueue --remote` share: the client from flags (the token from an
 * environment variable, never a flag, never printed), the client cache, and the progress line.
 */
import { randomBytes } from 'node:crypto';
import { clientCacheDir } from '../../cache/defaults.js';
import { FsCacheStore } from '../../cache/fs-store.js';
import type { BlobStore } from '../../cache/types.js';
import { UsageError } from '../errors.js';
import type { TransferErrorCode } from './errors.js';
import { RemoteClient } from './client.js';
import type { TransferProgress } from './remote-release.js';
import { TRANSPORTS, type TransportKind } from './transport.js';

export const DEFAULT_TOKEN_ENV = 'MARSIGN_API_TOKEN';

export interface RemoteFlags {
  remote: string;
  'token-env'?: string;
  transport?: string;
  'client-cache'?: string | boolean;
}

/** A retried request is said on stderr (never with the token: messages name the request and the code). */
function sayRetry(what: string, err: unknown, attempt: number): void {
  const code = (err as { code?: string })?.code ?? 'ERROR';
  process.stderr.write(`marsign: retrying ${what} (attempt ${attempt + 1}): ${code}\n`);
}

export function remoteClient(flags: RemoteFlags, onRetry = sayRetry): RemoteClient {
  const env = flags['token-env'] ?? DEFAULT_TOKEN_ENV;
  const token = process.env[env];
  if (!token)
    throw new UsageError(
      'REMOTE_TOKEN_MISSING' satisfies TransferErrorCode,
      `set the API token in $${env} (or name another variable with --token-env)`,
    );
  const transport = (flags.transport ?? 'h2') as TransportKind;
  if (!TRANSPORTS.includes(transport))
    throw new UsageError(
      'REMOTE_TRANSPORT' satisfies TransferErrorCode,
      `--transport must be one of ${TRANSPORTS.join(', ')}, got ${JSON.stringify(flags.transport)}`,
    );
  return new RemoteClient({
    url: flags.remote,
    token,
    transport,
    onRetry,
  });
}

/** The client's blob cache: `--client-cache DIR`, else $MARSIGN_CLIENT_CACHE / <cache root>/blobs; `--no-client-cache`: none. */
export function clientCache(flags: RemoteFlags): BlobStore | null {
  if (flags['client-cache'] === false) return null;
  const root = typeof flags['client-cache'] === 'string' ? flags['client-cache'] : clientCacheDir();
  // Blobs carry no HMAC (their name is their check): the store's secret is never used for them.
  return new FsCacheStore({ root, hmacSecret: randomBytes(32) }).blobs;
}

const MB = 1e6;

/** One status line on a terminal (stderr), redrawn as the transfer moves. */
export function progressLine(enabled: boolean): { update(p: TransferProgress): void; stop(): void } {
  let last = '';
  let drawn = false;
  return {
    update(p) {
      if (!enabled) return;
      const line =
        `${p.phase}: up ${(p.bytesUp / MB).toFixed(1)}/${(p.bytesUpTotal / MB).toFixed(1)} MB · ` +
        `locales ${p.localesDone}/${p.localesTotal} · down ${(p.bytesDown / MB).toFixed(1)} MB`;
      if (line === last) return;
      last = line;
      drawn = true;
      process.stderr.write(`\r\x1b[2K${line}`);
    },
    stop() {
      if (drawn) process.stderr.write('\n');
      drawn = false;
    },
  };
}
