import { createHash } from 'node:crypto';
import { CodedError } from '../src/errors.js';
import { CACHE_FORMAT_VERSION, type CacheKeyParts } from './types.js';

/** A cache key (and entry file name): lowercase hex sha256. */
export const CACHE_KEY_PATTERN = /^[0-9a-f]{64}$/;
const HEX_DIGEST = /^(?:[0-9a-f]{2})+$/;
/** Codec settings strings are short (`bzip2:9` style); anything longer is a caller bug. */
const MAX_CODEC_SETTINGS_LENGTH = 4096;
/** Longest accepted signer fingerprint (hex): sha512 is 128, leave room for a composite digest. */
const MAX_FINGERPRINT_LENGTH = 256;

/** Domain separation: a digest of these bytes can never collide with another marsign digest. */
const DOMAIN = 'marsign/cache-key';

/**
 * The content address of a signed, recompressed entry: hex sha256 over the format version and the
 * three parts, each field length-prefixed (u32 big-endian) so no two different tuples share an
 * encoding (`"ab" + "c"` and `"a" + "bc"` differ).
 */
export function cacheKey(parts: CacheKeyParts): string {
  const { signerFingerprint, codecSettings, inputSha256 } = parts;
  if (
    typeof signerFingerprint !== 'string' ||
    signerFingerprint.length > MAX_FINGERPRINT_LENGTH ||
    !HEX_DIGEST.test(signerFingerprint)
  )
    throw new CodedError(
      'CACHE_BAD_KEY_PART',
      `signerFingerprint must be a lowercase hex digest, got ${describe(signerFingerprint)}`,
    );
  if (
    typeof codecSettings !== 'string' ||
    codecSettings.length === 0 ||
    codecSettings.length > MAX_CODEC_SETTINGS_LENGTH
  )
    throw new CodedError(
      'CACHE_BAD_KEY_PART',
      `codecSettings must be a non-empty string of at most ${MAX_CODEC_SETTINGS_LENGTH} characters, got ${describe(codecSettings)}`,
    );
  if (typeof inputSha256 !== 'string' || !CACHE_KEY_PATTERN.test(inputSha256))
    throw new CodedError(
      'CACHE_BAD_KEY_PART',
      `inputSha256 must be 64 lowercase hex digits, got ${describe(inputSha256)}`,
    );

  const h = createHash('sha256');
  for (const field of [DOMAIN, String(CACHE_FORMAT_VERSION), signerFingerprint, codecSettings, inputSha256]) {
    const bytes = Buffer.from(field, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    h.update(len);
    h.update(bytes);
  }
  return h.digest('hex');
}

/** Throw unless `key` is a well-formed cache key (it becomes a file name, so this also stops `../`). */
export function assertCacheKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || !CACHE_KEY_PATTERN.test(key))
    throw new CodedError('CACHE_BAD_KEY', `cache key must be 64 lowercase hex digits, got ${describe(key)}`);
}

function describe(v: unknown): string {
  if (typeof v !== 'string') return typeof v;
  return JSON.stringify(v.length > 80 ? v.slice(0, 80) + '…' : v);
}
