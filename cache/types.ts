/**
 * The content-addressed cache of signed, recompressed entries (contract).
 * The store is an interface so a remote tier can be added without touching the pipeline.
 */

/** Bump when the entry layout or the meaning of a key changes: old entries become misses. */
export const CACHE_FORMAT_VERSION = 1;

export interface CacheKeyParts {
  /** SigningProfile.fingerprint (certificate chain and every signing option). */
  signerFingerprint: string;
  /** Stable string of the codec and its settings (see src/codecs settingsKey). */
  codecSettings: string;
  /** Hex sha256 of the entry's raw (compressed) bytes in the input MAR. */
  inputSha256: string;
}

export interface CacheStats {
  root: string;
  entries: number;
  bytes: number;
  /** Counters since this store object was created. */
  hits: number;
  misses: number;
  /** Entries found bad (truncated, flipped, wrong HMAC/version) and treated as misses. */
  corrupt: number;
  puts: number;
}

export interface CacheVerifyReport {
  checked: number;
  ok: number;
  /** Keys of bad entries (removed when `repair` was asked). */
  bad: { key: string; reason: string }[];
  /** Leftover temp/quarantine files of crashed writers removed (only with `repair`). */
  staleTempRemoved?: number;
}

export interface CachePruneResult {
  removed: number;
  freedBytes: number;
  remainingBytes: number;
  /** Leftover temp/quarantine files of crashed writers removed on the way. */
  staleTempRemoved?: number;
}

export interface CacheStore {
  /** The verified payload, or undefined on a miss (absent or bad entry; a bad entry is counted). */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Store atomically (temp file in the same directory, fsync, rename). Safe with concurrent writers. */
  put(key: string, payload: Uint8Array): Promise<void>;
  stats(): Promise<CacheStats>;
  verify(options?: { repair?: boolean }): Promise<CacheVerifyReport>;
  /** Remove least-recently-used entries until the total is at most maxBytes. */
  prune(maxBytes: number): Promise<CachePruneResult>;
}
