/**
 * The audit trail (docs/ARCHITECTURE.md "Audit"): one JSON line per signing operation, hash-chained.
 *
 * A signer (the CLI's pipeline, a queue worker) reports `AuditEvent`s: everything about one operation.
 * The single writer of a log (src/audit/log.ts) turns each into an `AuditRecord` by adding the chain
 * fields — `seq` (one more than the record before, across rotated logs) and `prev` (the sha256 of the
 * previous line's bytes as written) — and appends it as one line. Nothing secret is ever in a record:
 * keys are named by the sha256 of their public key and a PKCS#11 URI without its query (no PIN, no
 * pin-source), a timestamp authority by its URL without user info or query.
 */
import type { SigningProfile } from '../config/types.js';
import type { LocaleManifest } from '../pipeline/types.js';

/** Version of the record layout; a verifier refuses versions it does not know. */
export const AUDIT_RECORD_VERSION = 1;

/** `prev` of the very first record of a chain (a log with no predecessor). */
export const GENESIS = '0'.repeat(64);

/**
 * - `authenticode`: one PE entry's Authenticode signature (made here, shared in the run, or from the cache);
 * - `mar`: a locale output's MAR signature, made here;
 * - `output`: a locale output produced without a container signature made here: served whole from the
 *   locale-output cache (`action: 'served'`), or assembled for a profile that does not MAR-sign;
 * - `log-start`: the first line of every log file (names the predecessor log after a rotation).
 */
export type AuditOp = 'authenticode' | 'mar' | 'output';

/** What happened: an entry's manifest action, or for a whole output signed / served / assembled. */
export type AuditAction = 'signed' | 'shared' | 'cached' | 'served' | 'assembled';

/** A key, never its material: the sha256 of its SubjectPublicKeyInfo, and where it lives when in a token. */
export interface AuditKey {
  id: string;
  /** The RFC 7512 URI of a key in a PKCS#11 token, path attributes only (no query: no PIN, no pin-source). */
  uri?: string;
}

/** One signing operation, as the signer reports it (the log adds the chain fields). */
export interface AuditEvent {
  time: string;
  op: AuditOp;
  /** Who asked: an API client's name, `cli:<user>` for the CLI; null when unknown (legacy jobs). */
  client: string | null;
  release: string | null;
  locale: string | null;
  /** The container format (`mar`, `zip`), or `pe` for `marsign sign-pe`. */
  container: string;
  /** The entry name inside the container; null for a whole file. */
  entry: string | null;
  action: AuditAction;
  cache: 'hit' | 'miss';
  /** Hex sha256 of the input: an entry's stored (compressed) bytes, or the whole input file. */
  inputSha256: string;
  /** Hex sha256 of the output: the entry's stored bytes in the output, or the whole output file. */
  outputSha256: string;
  profile: string;
  /** The profile's fingerprint (certificate chain, key ids, every signing option). */
  fingerprint: string;
  /** The Authenticode key (authenticode), or the MAR keys in signature order (mar, output). */
  keys: AuditKey[];
  /** The timestamp authority's URL, when the operation is known to have used one. */
  tsa: string | null;
  host: string;
  version: string;
  /** Whole-file records: the input and output paths. */
  input?: string;
  output?: string;
  /** Service records: the Redis stream id the record travelled under (the drainer's de-duplication key). */
  sid?: string;
}

/** The chain fields, first on every line. */
export interface ChainFields {
  v: typeof AUDIT_RECORD_VERSION;
  /** 1 for the first record ever; one more than the previous record, across rotated logs. */
  seq: number;
  /** Hex sha256 of the previous line's bytes (without its newline); GENESIS for the first ever. */
  prev: string;
}

export type AuditRecord = ChainFields & AuditEvent;

/** The first line of every log file. */
export interface LogStartRecord extends ChainFields {
  time: string;
  op: 'log-start';
  /** File name (same directory) of the log this one continues; null for a new chain. */
  prevLog: string | null;
  /** Why the previous log was closed (`rotated`, `size`, `damaged: …`); absent for a new chain. */
  reason?: string;
  host: string;
  version: string;
}

export type AnyAuditRecord = AuditRecord | LogStartRecord;

/** The run a locale belongs to, for its records. */
export interface AuditIdentity {
  client?: string | undefined;
  release?: string | undefined;
  locale?: string | undefined;
}

/** What the pipeline hands its audit sink once per locale it produced (not for dry runs). */
export interface LocaleAuditRun extends AuditIdentity {
  profile: SigningProfile;
  manifest: LocaleManifest;
  /** Hex sha256 of the whole input file. */
  inputSha256: string;
}

/**
 * Where the pipeline's audit records go (src/pipeline `SigningContext.audit`). `ready` runs before a
 * locale does any work (a sink that cannot take records refuses the locale there); `locale` after its
 * output is committed, and a locale whose records could not be written fails with the sink's error.
 */
export interface AuditSink {
  ready?(): Promise<void>;
  locale(run: LocaleAuditRun): Promise<void>;
}

/** Something that takes events durably: the local log (file) or the service's Redis stream. */
export interface AuditWriter {
  append(events: readonly AuditEvent[]): Promise<void>;
  /** Checked before a locale starts (the service's backlog bound). */
  ready?(): Promise<void>;
}

export type AuditErrorCode =
  | 'AUDIT_LOG_UNWRITABLE'
  | 'AUDIT_LOG_CORRUPT'
  | 'AUDIT_LOG_LOCKED'
  | 'AUDIT_WRITE_FAILED'
  | 'AUDIT_QUEUE_FAILED'
  | 'AUDIT_BACKLOG'
  | 'AUDIT_LOG_UNREADABLE'
  | 'AUDIT_BAD_QUERY';
