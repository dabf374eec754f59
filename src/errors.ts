/**
 * Typed, coded errors (docs/ARCHITECTURE.md "Errors").
 *
 * Every error the product raises on purpose is a CodedError with a stable `code`. Callers and tests
 * classify by `name`/`code`, never by message text: errors that cross a worker thread or a BullMQ job
 * lose their prototype, so `isRetryable` and friends work on plain `{ name, code }` objects too.
 */

export interface CodedErrorOptions {
  cause?: unknown;
  /** Extra machine-readable context (never secrets). */
  details?: Record<string, unknown>;
}

export class CodedError extends Error {
  override name = 'CodedError';
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;
  /** Whether the operation may succeed if tried again (I/O, network, timestamp authority). */
  readonly retryable: boolean = false;

  constructor(code: string, message: string, options: CodedErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }

  toJSON(): PlainError {
    return toPlainError(this);
  }
}

/** A malformed or hostile input file. `offset` is the byte offset where the problem was found. */
export class FormatError extends CodedError {
  override name = 'FormatError';
  readonly format: string;
  readonly offset: number | undefined;

  constructor(
    format: string,
    code: string,
    message: string,
    offset?: number,
    options: CodedErrorOptions = {},
  ) {
    super(code, offset === undefined ? message : `${message} (at offset ${offset})`, options);
    this.format = format;
    this.offset = offset;
  }
}

/** Bad configuration, profile, key or passphrase. Never contains the secret itself. */
export class ConfigError extends CodedError {
  override name = 'ConfigError';
}

/** The signing policy forbids the operation (e.g. a matched entry that is not a PE). */
export class PolicyError extends CodedError {
  override name = 'PolicyError';
}

/** A usage error: bad CLI arguments or options. */
export class UsageError extends CodedError {
  override name = 'UsageError';
}

/** A transient failure (I/O, network, remote authority, Redis) that may succeed when retried. */
export class TransientError extends CodedError {
  override name = 'TransientError';
  override readonly retryable = true;
}

/**
 * A remote authority (an RFC 3161 timestamp server) answered, but unusably: garbage, a rejection, a
 * token for something else. Not retried (asking again gets the same answer) and not a verdict on
 * the file being signed or verified, so the CLI exits 2, not 1.
 */
export class AuthorityError extends CodedError {
  override name = 'AuthorityError';
}

/** A signature or digest that does not verify. */
export class VerificationError extends CodedError {
  override name = 'VerificationError';
}

/** The serialisable shape of an error (worker-thread messages, job results, JSON output). */
export interface PlainError {
  name: string;
  code: string;
  message: string;
  retryable?: boolean;
  format?: string;
  offset?: number;
  details?: Record<string, unknown>;
}

const NODE_TRANSIENT_CODES = new Set([
  'EAGAIN',
  'EBUSY',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTCONN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'EMFILE',
  'ENFILE',
  'ENOSPC',
]);

export function toPlainError(err: unknown): PlainError {
  if (err instanceof CodedError) {
    const out: PlainError = { name: err.name, code: err.code, message: err.message };
    if (err.retryable) out.retryable = true;
    if (err instanceof FormatError) {
      out.format = err.format;
      if (err.offset !== undefined) out.offset = err.offset;
    }
    if (err.details) out.details = err.details;
    return out;
  }
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      name: err.name,
      code: typeof code === 'string' ? code : 'INTERNAL',
      message: err.message,
      ...(typeof code === 'string' && NODE_TRANSIENT_CODES.has(code) ? { retryable: true } : {}),
    };
  }
  if (isPlainError(err)) return { ...err };
  return { name: 'Error', code: 'INTERNAL', message: String(err) };
}

function isPlainError(err: unknown): err is PlainError {
  return (
    typeof err === 'object' &&
    err !== null &&
    typeof (err as PlainError).name === 'string' &&
    typeof (err as PlainError).code === 'string' &&
    typeof (err as PlainError).message === 'string'
  );
}

/** Rebuild a typed error from its plain form (after a thread or queue boundary). */
export function fromPlainError(p: PlainError): CodedError {
  const opts: CodedErrorOptions = p.details ? { details: p.details } : {};
  let e: CodedError;
  switch (p.name) {
    case 'FormatError':
      e = new FormatError(p.format ?? 'unknown', p.code, p.message, undefined, opts);
      Object.defineProperty(e, 'offset', { value: p.offset });
      Object.defineProperty(e, 'message', { value: p.message });
      return e;
    case 'ConfigError':
      return new ConfigError(p.code, p.message, opts);
    case 'PolicyError':
      return new PolicyError(p.code, p.message, opts);
    case 'UsageError':
      return new UsageError(p.code, p.message, opts);
    case 'TransientError':
      return new TransientError(p.code, p.message, opts);
    case 'VerificationError':
      return new VerificationError(p.code, p.message, opts);
    case 'AuthorityError':
      return new AuthorityError(p.code, p.message, opts);
    default:
      e = p.retryable ? new TransientError(p.code, p.message, opts) : new CodedError(p.code, p.message, opts);
      return e;
  }
}

/**
 * The same error (class, code, details) with the archive entry named first in its message — `entry
 * "x/y.dll": libbzip2: BZ_DATA_ERROR` — and in `details.entry`, unless it already names it. A codec or
 * PE error knows only bytes; the pipeline and `mar extract` know which entry they were.
 */
export function namingEntry(err: unknown, name: string): unknown {
  const p = toPlainError(err);
  if (p.code === 'ABORTED' || p.details?.entry === name) return err;
  const named =
    p.message.includes(JSON.stringify(name)) ||
    p.message.startsWith(`${name} `) ||
    p.message.startsWith(`${name}: `);
  const e = fromPlainError({
    ...p,
    message: named ? p.message : `entry ${JSON.stringify(name)}: ${p.message}`,
    details: { ...p.details, entry: name },
  });
  if (err instanceof Error && err.stack) e.stack = `${e.name}: ${e.message}\n${err.stack}`;
  return e;
}

/**
 * Whether a failure is worth retrying (BullMQ backoff) or final (UnrecoverableError).
 * Format, policy, config, authority and verification errors are final; I/O and network errors are retryable.
 */
export function isRetryable(err: unknown): boolean {
  const p = toPlainError(err);
  if (p.retryable) return true;
  return false;
}
