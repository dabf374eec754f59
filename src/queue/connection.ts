/**
 * Redis connection settings from the config file and the environment. The password is only ever
 * read from the environment variable the config names (`redis.passwordEnv`), never from the file.
 */
import type { ConnectionOptions as BullConnectionOptions } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { ConfigError, TransientError } from '../errors.js';
import type { QueueErrorCode } from './types.js';
import type { LoadedConfig } from '../config/types.js';

/** Overrides `redis.url` from the config (handy for tests and containers). */
export const REDIS_URL_ENV = 'MARSIGN_REDIS_URL';
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
export const DEFAULT_PREFIX = 'marsign';

export interface RedisSettings {
  /** ioredis options without the password (safe to log after `describeRedis`). */
  options: RedisOptions;
  /** Key prefix for BullMQ queues and marsign's own keys. */
  prefix: string;
  /** URL without credentials, for logs and errors. */
  display: string;
}

export function redisSettings(
  config: Pick<LoadedConfig, 'file'> | undefined,
  env: NodeJS.ProcessEnv = process.env,
): RedisSettings {
  const r = config?.file.redis ?? {};
  const raw = env[REDIS_URL_ENV] || r.url || DEFAULT_REDIS_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // Not echoed: an unparseable URL may still hold a password.
    throw new ConfigError(
      'CONFIG_REDIS_URL' satisfies QueueErrorCode,
      `redis.url is not a URL (${raw.length} characters)`,
    );
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError(
      'CONFIG_REDIS_URL' satisfies QueueErrorCode,
      `redis.url must be redis:// or rediss://, found ${url.protocol}//`,
    );
  }
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) {
    throw new ConfigError(
      'CONFIG_REDIS_URL' satisfies QueueErrorCode,
      `redis.url database must be a non-negative integer, found ${url.pathname}`,
    );
  }
  const options: RedisOptions = {
    host: url.hostname || '127.0.0.1',
    port: url.port ? Number(url.port) : 6379,
    db,
  };
  if (url.username) options.username = decodeURIComponent(url.username);
  if (url.password) options.password = decodeURIComponent(url.password);
  if (r.passwordEnv) {
    const pw = env[r.passwordEnv];
    if (pw === undefined || pw === '') {
      throw new ConfigError(
        'SECRET_MISSING' satisfies QueueErrorCode,
        `redis.passwordEnv names ${r.passwordEnv}, which is not set`,
      );
    }
    options.password = pw;
  }
  if (r.tls || url.protocol === 'rediss:') options.tls = { servername: options.host };
  const prefix = r.prefix ?? DEFAULT_PREFIX;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) {
    throw new ConfigError(
      'CONFIG_REDIS_PREFIX' satisfies QueueErrorCode,
      `redis.prefix must match [A-Za-z0-9_.-]{1,64}, found ${JSON.stringify(prefix)}`,
    );
  }
  return {
    options,
    prefix,
    display: `${options.tls ? 'rediss' : 'redis'}://${options.host}:${options.port}/${db}`,
  };
}

/***@');
}

/**
 * A client for marsign's own keys (locks, worker snapshots). `maxRetriesPerRequest: null` makes
 * commands wait through a Redis restart instead of failing, as BullMQ's own connections do.
 */
export function createRedis(settings: RedisSettings, extra: RedisOptions = {}): Redis {
  return new Redis({ maxRetriesPerRequest: null, ...settings.options, ...extra });
}

/** Connection options for BullMQ's own clients (it creates and closes them). */
export function bullConnection(settings: RedisSettings): BullConnectionOptions {
  return { ...settings.options, maxRetriesPerRequest: null } as BullConnectionOptions;
}

/** Fail fast (TransientError REDIS_UNAVAILABLE) when Redis does not answer PING within `timeoutMs`. */
export async function assertRedisReachable(settings: RedisSettings, timeoutMs = 5_000): Promise<void> {
  const c = new Redis({
    ...settings.options,
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  // ioredis rejects connect() with "Connection is closed" when the AUTH reply fails; the reason is
  // the error event's.
  let reason: unknown;
  c.on('error', (e: unknown) => (reason ??= e));
  try {
    await c.connect();
    await c.ping();
  } catch (err) {
    const auth = authFailure(reason) ?? authFailure(err);
    if (auth)
      throw new ConfigError(
        'REDIS_AUTH_FAILED' satisfies QueueErrorCode,
        `Redis at ${settings.display}: ${auth}`,
      );
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new TransientError(
      'REDIS_UNAVAILABLE' satisfies QueueErrorCode,
      `cannot reach Redis at ${settings.display}: ${code}`,
    );
  } finally {
    c.disconnect();
  }
}

/**
 * What an authentication failure means (Redis reply prefixes WRONGPASS, NOAUTH; older servers say
 * "invalid password"), or undefined for any other error. Not retried: the same password fails again.
 */
function authFailure(err: unknown): string | undefined {
  const m = err instanceof Error ? err.message : '';
  if (/^WRONGPASS|invalid (username-)?password/i.test(m))
    return 'authentication failed: the password (redis.passwordEnv or the URL) or user is wrong';
  if (/^NOAUTH/.test(m))
    return 'authentication failed: the server requires a password and none was given (redis.passwordEnv or the URL)';
  if (/AUTH.*called without any password configured/i.test(m))
    return 'authentication failed: a password was given but the server has none configured';
  return undefined;
}

/**
 * For long-running processes (worker, serve), which wait through a Redis that is down: only a refused
 * password fails them at start (REDIS_AUTH_FAILED), since waiting cannot fix it.
 */
export async function assertRedisAuth(settings: RedisSettings, timeoutMs = 2_000): Promise<void> {
  try {
    await assertRedisReachable(settings, timeoutMs);
  } catch (err) {
    if ((err as { code?: string }).code === 'REDIS_AUTH_FAILED') throw err;
  }
}
