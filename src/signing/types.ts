import type { HashName, SigningKey } from '../keys/types.js';

/** One RFC 3161 timestamp authority list, tried in order with retries and backoff. */
export interface TimestampOptions {
  urls: string[];
  /** Attempts per authority (default 3). */
  retries?: number;
  /** First backoff delay in ms, doubled each retry (default 500). */
  backoffMs?: number;
  /** Per-request timeout in ms (default 10000). */
  timeoutMs?: number;
  /** Hash used for the message imprint (default: the signing digest). */
  digest?: HashName;
}

/** Everything that decides the bytes of an Authenticode signature (and so is part of the cache key). */
export interface AuthenticodeOptions {
  key: SigningKey;
  /** Signer certificate first, then intermediates (DER). The self-signed root may be omitted. */
  certChainDer: Uint8Array[];
  /** Image digest and signer digest algorithm: sha256 (default) or sha1 (legacy). */
  digest: 'sha256' | 'sha1';
  programName?: string;
  programUrl?: string;
  /** Add the signingTime attribute (default false: keeps output deterministic and cacheable). */
  signingTime?: boolean;
  timestamp?: TimestampOptions;
}

/** Result of verifying one PE's Authenticode signature. */
export interface PeVerifyResult {
  signed: boolean;
  /** The image digest recomputed from the file equals the one in SpcIndirectDataContent. */
  digestMatches: boolean;
  /** The RSA signature over the signed attributes verifies with the signer certificate. */
  signatureValid: boolean;
  /** The chain leads to one of the given CA certificates (undefined when no CA was given). */
  chainValid?: boolean;
  timestamp?: { present: boolean; valid?: boolean; time?: string };
  signer?: { subject: string; issuer: string; serial: string };
  digestAlgorithm?: string;
  problems: string[];
}
