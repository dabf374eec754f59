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
  profiles: Record<string, ProfileFile>;
}

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
    /** PEM private key (PKCS#1/PKCS#8, optionally encrypted). */
    key?: string;
    /** PKCS#12 file holding key and chain (instead of certChain + key). */
    pkcs12?: string;
    passphraseEnv?: string;
    passphraseFile?: string;
    digest?: 'sha256' | 'sha1';
    programName?: string;
    programUrl?: string;
    signingTime?: boolean;
    timestamp?: TimestampOptions;
  };
  mar?: {
    /** One PEM private key per MAR signature, in signature order. */
    keys: string[];
    passphraseEnv?: string;
    passphraseFile?: string;
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
}

export const DEFAULT_POLICY: Required<PolicyFile> = {
  include: ['**/*.exe', '**/*.dll', '*.exe', '*.dll'],
  exclude: [],
  onInvalid: 'error',
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
  /**
   * Hex digest over everything that changes signed output: certificate chain, key ids, digest,
   * program name/URL, signingTime, timestamp settings. Part of every cache key.
   */
  fingerprint: string;
}
