import { ConfigError, type CodedErrorOptions } from '../errors.js';

/**
 * Every code src/config raises itself. A backend's or the cache's ConfigError caught while loading
 * keeps its own code when config re-raises it with the file and field prefixed.
 */
export type ConfigErrorCode =
  | 'CONFIG_NOT_FOUND'
  | 'CONFIG_INVALID'
  | 'CONFIG_FILE_MISSING'
  | 'PROFILE_NOT_FOUND'
  | 'SECRET_MISSING'
  | 'SECRET_INVALID'
  | 'KEY_INVALID'
  | 'KEY_UNSUPPORTED'
  | 'KEY_CERT_MISMATCH'
  | 'CERT_INVALID'
  | 'CERT_NOT_CODE_SIGNING'
  | 'CACHE_SECRET_INVALID'
  | 'CACHE_SECRET_TOO_SHORT';

export function configError(
  code: ConfigErrorCode,
  message: string,
  options?: CodedErrorOptions,
): ConfigError {
  return new ConfigError(code, message, options);
}
