import { FormatError, type CodedError, type CodedErrorOptions } from '../errors.js';

/**
 * Every code src/signing raises itself (a timestamp authority's own code is passed through as it
 * came; see fetchTimestamp). 'PE_BAD_CERT_TABLE' is the PE reader's code, reused when verify-pe
 * finds a certificate-table entry it cannot use.
 */
export type SigningErrorCode =
  | 'AUTHENTICODE_BAD_OPTION'
  | 'AUTHENTICODE_BAD_CERTIFICATE'
  | 'KEY_CERT_MISMATCH'
  | 'SIGNATURE_SELF_CHECK_FAILED'
  | 'MAR_ALGORITHM_UNSUPPORTED'
  | 'MAR_KEYS_INVALID'
  | 'KEY_UNSUPPORTED'
  | 'CERT_NOT_FOUND'
  | 'CERT_INVALID'
  | 'PKCS7_MALFORMED'
  | 'PE_BAD_CERT_TABLE'
  | 'TSA_BAD_OPTION'
  | 'TSA_BAD_REPLY'
  | 'TSA_BAD_TOKEN'
  | 'TSA_REJECTED'
  | 'TSA_IMPRINT_MISMATCH'
  | 'TSA_NONCE_MISMATCH'
  | 'TSA_UNAVAILABLE';

/** The CodedError subclasses signing raises share CodedError's constructor. */
type CodedErrorClass<E extends CodedError> = new (
  code: string,
  message: string,
  options?: CodedErrorOptions,
) => E;

/** `new Kind(code, message, options)`, with `code` checked against SigningErrorCode. */
export function signingError<E extends CodedError>(
  Kind: CodedErrorClass<E>,
  code: SigningErrorCode,
  message: string,
  options?: CodedErrorOptions,
): E {
  return new Kind(code, message, options);
}

/** A malformed structure (`format` 'pkcs7', 'pe', 'tsa', ...) found while signing or verifying. */
export function signingFormatError(
  format: string,
  code: SigningErrorCode,
  message: string,
  offset?: number,
  options?: CodedErrorOptions,
): FormatError {
  return new FormatError(format, code, message, offset, options);
}
