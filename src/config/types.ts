import { DEFAULT_MAX_OUTPUT_SIZE, DEFAULT_MAX_RATIO } from '../codecs/types.js';
import type { SigningKey } from '../keys/types.js';
import type { AuthenticodeOptions, TimestampOptions } from '../signing/types.js';

/**
 * The configuration file (JSON), contract. Paths inside it are relative to the file's directory.
 * Secrets are never inline: passphrases, the cache HMAC secret, the API token and the Redis password
 * come from an environment variable (`*Env`) or a file (`*File`).
 *
 * Example: fixtures/release/marsign.config.json.
 */
export interface ConfigFile {
  cache?: {
    /** Cache root; default $MARSIGN_CACHE_DIR, else the user's cache dir (~/.cache/marsign). */
    dir?: string;
    hmacSecretEnv?: string;
    hmacSecretFile?: string;
    /**
     * The locale-output tier: store each signed locale MAR and serve it when the same input is signed
     * again with the same profile, policy and marsign version (default true; `--no-output-cache`).
     */
    outputs?: boolean;
  };
  redis?: { url?: string; passwordEnv?: string; tls?: boolean; prefix?: string };
  /** The audit trail (src/audit, docs/OPERATIONS.md "Audit"). */
  audit?: AuditFile;
  server?: {
    host?: string;
    port?: number;
    /**
     * The legacy single API token: one client named `default` with the `admin` scope. Exclusive with
     * `clients`.
     */
    tokenEnv?: string;
    tokenFile?: string;
    /** Named API clients, each with its own token, profiles and scopes (docs/OPERATIONS.md "Clients"). */
    clients?: Record<string, ClientFile>;
    /**
     * Key of the dashboard session cookies. Default: random per server process (sessions end when the
     * server restarts); give one to several servers behind a load balancer.
     */
    sessionSecretEnv?: string;
    sessionSecretFile?: string;
    /** Directories that enqueued inputs and outputs must stay inside. */
    roots?: string[];
  };
  /** Decoding bounds for the entries this config signs (codec bombs; docs/OPERATIONS.md "Limits"). */
  limits?: LimitsFile;
  /** PKCS#11 (src/keys/pkcs11.ts): the Cryptoki library for `pkcs11:` key URIs ($MARSIGN_PKCS11_MODULE overrides). */
  pkcs11?: { module?: string };
  profiles: Record<string, ProfileFile>;
}

export interface AuditFile {
  /**
   * The local audit log (JSON lines, hash-chained), relative to the config file. Default
   * $MARSIGN_AUDIT_LOG, else $XDG_STATE_HOME/marsign/audit.jsonl, else ~/.local/state/marsign/audit.jsonl.
   * The signing commands append to it; in the service, the drainer does.
   */
  log?: string;
  /** Start a new log file (the chain goes on) once the log is this big (default 256 MiB). */
  rotateBytes?: number;
  /**
   * Service: records waiting in Redis for the drainer past which workers start no new locale (they
   * retry) until it catches up (default 100000).
   */
  maxBacklog?: number;
  /** Service: whether `marsign serve` drains the workers' records into the log (default true). */
  drain?: boolean;
}

export interface LimitsFile {
  /** Largest decoded size of one entry, in bytes (default 1 GiB, DEFAULT_MAX_OUTPUT_SIZE). */
  maxEntrySize?: number;
  /**
   * Largest compression ratio (decoded bytes per stored byte) of one entry (default 1000,
   * DEFAULT_MAX_RATIO); decoded sizes up to 16 MiB are never refused for their ratio.
   */
  maxCompressionRatio?: number;
  /**
   * Bytes of whole inputs, outputs and in-flight entries one process's pipeline holds in memory at once
   * (default 512 MiB, src/pipeline/budget.ts; at least 1 MiB). What does not fit is streamed from disk.
   */
  memoryBudget?: number;
}

/** The per-entry decoding bounds of `limits` (the memory budget is the pipeline's, not a profile's). */
export type DecodeLimits = Required<Omit<LimitsFile, 'memoryBudget'>>;

export const DEFAULT_LIMITS: DecodeLimits = {
  maxEntrySize: DEFAULT_MAX_OUTPUT_SIZE,
  maxCompressionRatio: DEFAULT_MAX_RATIO,
};

/**
 * What an API client may do. `admin` implies every other scope and every profile; `read:all` implies
 * `read:own`.
 */
export const CLIENT_SCOPES = ['submit', 'read:own', 'read:all', 'admin'] as const;
export type ClientScope = (typeof CLIENT_SCOPES)[number];

/** One API client. Its token comes from exactly one of tokenEnv, tokenFile or tokenSha256. */
export interface ClientFile {
  tokenEnv?: string;
  tokenFile?: string;
  /** The token's sha256 (64 hex digits): the config then holds no usable secret. */
  tokenSha256?: string;
  /** Profiles the client may submit with (required with `submit`, not allowed with `admin`). */
  profiles?: string[];
  scopes: ClientScope[];
}

export interface ProfileFile {
  authenticode?: {
    /** PEM file: signer certificate first, then intermediates. */
    certChain?: string;
    /**
     * PEM private key (PKCS#1/PKCS#8, optionally encrypted), or an RFC 7512 `pkcs11:` URI of a key in a
     * token (then certChain is optional: the token's certificate for the key is used).
     */
    key?: string;
    /** PKCS#12 file holding key and chain (instead of certChain + key). */
    pkcs12?: string;
    passphraseEnv?: string;
    passphraseFile?: string;
    /** User PIN of the token of a `pkcs11:` key (or the URI's pin-source). */
    pinEnv?: string;
    pinFile?: string;
    digest?: 'sha256' | 'sha1';
    programName?: string;
    programUrl?: string;
    signingTime?: boolean;
    timestamp?: TimestampOptions;
  };
  mar?: {
    /** One key per MAR signature, in signature order: a PEM file or a `pkcs11:` URI. */
    keys: string[];
    passphraseEnv?: string;
    passphraseFile?: string;
    pinEnv?: string;
    pinFile?: string;
    /** sha384 = algorithm id 2 (default), sha1 = id 1 (legacy). */
    algorithm?: 'sha384' | 'sha1';
  };
  policy?: PolicyFile;
}

export interface PolicyFile {
  /** Globs (picomatch, matched against the entry name) of entries to Authenticode-sign. */
  include?: string[];
  /** Globs of entries never signed (third-party DLLs keeping their vendor's signature). */
  exclude?: string[];
  /** What a matched entry that is not a PE does: 'error' (default) or 'skip' (pass through, recorded). */
  onInvalid?: 'error' | 'skip';
  /**
   * Decode every entry the policy does not sign (and check zip's CRC-32) before the container is
   * signed, so a signature never vouches for an entry that cannot be unpacked (default true;
   * `--no-verify-passthrough`). Each unique stored blob is checked once (a marker in the cache).
   */
  verifyPassthrough?: boolean;
}

export const DEFAULT_POLICY: Required<PolicyFile> = {
  include: ['**/*.exe', '**/*.dll', '*.exe', '*.dll'],
  exclude: [],
  onInvalid: 'error',
  verifyPassthrough: true,
};

/** A loaded, validated configuration (no secrets inside, only where to find them). */
export interface LoadedConfig {
  path: string;
  /** sha256 of the config file's bytes: what logs show instead of its contents. */
  sha256: string;
  dir: string;
  file: ConfigFile;
}

/** A loaded signing profile: keys in memory, ready to sign. Never serialised or logged. */
export interface SigningProfile {
  name: string;
  authenticode?: AuthenticodeOptions;
  mar?: { keys: SigningKey[]; algorithm: 'sha384' | 'sha1' };
  policy: Required<PolicyFile>;
  /** The config's `limits`, defaults filled in (not part of the fingerprint: they only refuse input). */
  limits: DecodeLimits;
  /**
   * Hex digest over everything that changes signed output: certificate chain, key ids, digest,
   * program name/URL, signingTime, timestamp settings. Part of every cache key.
   */
  fingerprint: string;
}
