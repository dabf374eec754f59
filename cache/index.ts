/** The content-addressed cache: key derivation, the filesystem store, defaults and size parsing. */
export * from './types.js';
export type { CacheErrorCode } from './errors.js';
export {
  cacheKey,
  checkKey,
  outputCacheKey,
  signatureKey,
  assertCacheKey,
  CACHE_KEY_PATTERN,
} from './key.js';
export { openCacheStore, type OpenCacheOptions } from './factory.js';
export {
  FsCacheStore,
  HEADER_SIZE,
  MAX_PAYLOAD_BYTES,
  MAX_OUTPUT_META_BYTES,
  OUTPUT_HEADER_SIZE,
  OUTPUT_SUFFIX,
  PAYLOAD_SUFFIX,
  MIN_SECRET_BYTES,
  MAX_BLOB_BYTES,
  BLOB_SUFFIX,
  type BlobErrorCode,
  STALE_TEMP_MS,
  TOUCH_INTERVAL_MS,
  type CacheEntryProblem,
  type FsCacheStoreOptions,
} from './fs-store.js';
export {
  clientCacheDir,
  defaultCacheDir,
  loadOrCreateSecret,
  readSecretFile,
  SECRET_FILE_NAME,
} from './defaults.js';
export { parseSize, formatSize } from './size.js';
