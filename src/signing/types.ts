import type { HashName, SigningKey } from '../keys/types.js';
import type { Check, CheckStatus } from './check.js';

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

/** One Authenticode signature of a PE: a WIN_CERTIFICATE entry's SignedData or one nested in it. */
export interface PeSignatureResult {
  /** 0-based, in file order: entry 0, its nested signatures, entry 1, ... (osslsigncode's "Signature Index"). */
  index: number;
  /** The WIN_CERTIFICATE entry it is in (0-based). */
  entry: number;
  /** Nested (unauthenticated attribute 1.3.6.1.4.1.311.2.4.1 of the entry's signer) rather than the entry's own. */
  nested: boolean;
  /** The image digest algorithm of SpcIndirectDataContent. */
  digestAlgorithm?: string;
  signer?: { subject: string; issuer: string; serial: string };
  /** Worst of `checks`. */
  status: CheckStatus;
  checks: {
    /** The image digest recomputed from the file equals the signed one. */
    digest: Check;
    /** contentType, messageDigest and the signature over the signed attributes, with the embedded signer certificate. */
    signature: Check;
    /** The signer's chain to the given CAs (`not checked` without --ca). */
    chain: Check;
    /**
     * Only when timestamped: imprint, TSA signature and the TSA chain to the given TSA CAs. `ok` only
     * when all three hold; `not checked` when the token verifies but no TSA CA was given.
     */
    timestamp?: Check & { time?: string };
    /** Only on a nested signature that itself carries nested signatures: those are not followed. */
    nestedSignatures?: Check;
  };
  problems: string[];
}

/**
 * Result of verifying one PE's Authenticode signatures. `status` and `signatures` are the full
 * report; the older boolean fields are kept for scripts and never claim what was not checked.
 */
export interface PeVerifyResult {
  signed: boolean;
  /** Worst over all signatures (`invalid` when unsigned). */
  status: CheckStatus;
  /** Every signature: each certificate-table entry and the signatures nested in it. */
  signatures: PeSignatureResult[];
  /** What was not checked and why, one line each (empty when everything was checked). */
  notChecked: string[];
  /** Every signature's image digest matches. */
  digestMatches: boolean;
  /** Every signature verifies with its signer certificate. */
  signatureValid: boolean;
  /** Every signer chain leads to one of the given CAs; false when one does not; undefined when not checked (no CA given). */
  chainValid?: boolean;
  /**
   * The primary signature's timestamp. `valid` is true only when imprint, TSA signature and TSA chain
   * were all verified, false when one failed, absent when not fully checked (no TSA CA given, legacy
   * counter-signature).
   */
  timestamp?: { present: boolean; valid?: boolean; time?: string };
  /** The primary signature's signer. */
  signer?: { subject: string; issuer: string; serial: string };
  /** The primary signature's image digest algorithm. */
  digestAlgorithm?: string;
  problems: string[];
}
