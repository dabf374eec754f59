/** Every code the CLI commands (src/cli) raise themselves; the libraries they call raise their own. */
export type CliErrorCode =
  | 'USAGE'
  | 'PROFILE_REQUIRED'
  | 'PROFILE_NO_MAR'
  | 'PROFILE_NO_AUTHENTICODE'
  | 'OUTPUT_REQUIRED'
  | 'RELEASE_NOT_FOUND'
  | 'CACHE_NOT_FOUND'
  | 'CERT_NOT_FOUND'
  | 'NOTHING_TO_VERIFY'
  | 'UNKNOWN_FORMAT';
