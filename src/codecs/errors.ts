import { FormatError, PolicyError, type CodedErrorOptions } from '../errors.js';

/** Every code the codecs raise: callers and tests may switch on these, so they are a closed set. */
export type CodecErrorCode =
  | 'CODEC_CORRUPT'
  | 'CODEC_ENCODE_FAILED'
  | 'CODEC_OUTPUT_TOO_LARGE'
  | 'CODEC_RATIO_TOO_HIGH'
  | 'CODEC_TRAILING_DATA'
  | 'CODEC_UNSUPPORTED'
  | 'POLICY_NOT_PE';

/** A bad compressed stream (`format` names the codec: 'bz2', 'xz', 'deflate', 'none'). */
export function codecError(
  format: string,
  code: Exclude<CodecErrorCode, 'POLICY_NOT_PE'>,
  message: string,
  offset?: number,
  options?: CodedErrorOptions,
): FormatError {
  return new FormatError(format, code, message, offset, options);
}

/** A decoded entry the signing policy rejects (it matched, but is not what the policy says). */
export function codecPolicyError(
  code: Extract<CodecErrorCode, 'POLICY_NOT_PE'>,
  message: string,
  options?: CodedErrorOptions,
): PolicyError {
  return new PolicyError(code, message, options);
}
