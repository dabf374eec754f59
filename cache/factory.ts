/**
 * Opening the cache a configuration names: the one place that turns config into a `CacheStore`, so the
 * pipeline, the CLI's `cache` commands and the service never construct a store class themselves.
 * Today every store is the filesystem store; a remote or wrapped store is added here.
 */
import { randomBytes } from 'node:crypto';
import { cacheDirOf, cacheSettings } from '../src/config/index.js';
import type { LoadedConfig } from '../src/config/types.js';
import { FsCacheStore, type FsCacheStoreOptions } from './fs-store.js';
import type { CacheStore } from './types.js';

export interface OpenCacheOptions {
  /** Override the configured directory (CLI `--cache-dir`). */
  dir?: string;
  /**
   * For maintenance that never checks an entry's HMAC (`cache stats`, `prune`): a throwaway secret, so
   * the cache's own secret is neither read nor created.
   */
  noSecret?: boolean;
  /** Test hook passed to the filesystem store. */
  onBadEntry?: FsCacheStoreOptions['onBadEntry'];
}

/**
 * The cache of `config` (dir: config `cache.dir`, else $MARSIGN_CACHE_DIR, else the user's cache dir;
 * HMAC secret from the config, else generated once in the directory). Without a config, the defaults.
 */
export async function openCacheStore(
  config: LoadedConfig | undefined,
  options: OpenCacheOptions = {},
): Promise<CacheStore> {
  const { dir, hmacSecret } = options.noSecret
    ? { dir: cacheDirOf(config, options.dir), hmacSecret: randomBytes(32) }
    : await cacheSettings(config, options.dir);
  return new FsCacheStore({
    root: dir,
    hmacSecret,
    ...(options.onBadEntry ? { onBadEntry: options.onBadEntry } : {}),
  });
}
