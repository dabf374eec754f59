/** Every code src/service throws (not the codes of HTTP error bodies it only sends: AUTH_*, BLOB_*, …). */
export type ServiceErrorCode =
  | 'USAGE'
  | 'SECRET_MISSING'
  | 'CONFIG_SERVER_TOKEN'
  | 'RELEASE_UNKNOWN_PROFILE'
  | 'RELEASE_LOST'
  | 'REDIS_UNAVAILABLE'
  | 'CACHE_NO_BLOBS';
