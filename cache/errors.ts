/**
 * Every code cache/ raises besides the blob API's (BlobErrorCode, cache/fs-store.ts): bad entries
 * and payloads, keys, the store's options and the HMAC secret, size arguments.
 */
export type CacheErrorCode =
  | 'CACHE_BAD_ROOT'
  | 'CACHE_BAD_SECRET'
  | 'CACHE_SECRET_TOO_SHORT'
  | 'CACHE_SECRET_UNREADABLE'
  | 'CACHE_SECRET_INVALID'
  | 'CACHE_SECRET_PERMISSIONS'
  | 'CACHE_BAD_PAYLOAD'
  | 'CACHE_PAYLOAD_TOO_LARGE'
  | 'CACHE_BAD_MAX_SIZE'
  | 'CACHE_UNSAFE_PATH'
  | 'CACHE_BAD_KEY'
  | 'CACHE_BAD_KEY_PART'
  | 'BAD_SIZE';
