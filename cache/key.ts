import { createHash } from 'node:crypto';
import { CodedError } from '../src/errors.js';
import {
  CACHE_FORMAT_VERSION,
  OUTPUT_FORMAT_VERSION,
  type CacheKeyParts,
  type CheckKeyParts,
  type OutputKeyParts,
  type SignatureKeyParts,
} from './types.js';
import type { CacheErrorCode } from './errors.js';

/** A cache key (and entry file name): lowercase hex sha256. */
export const CACHE_KEY_PATTERN = /^[0-9a-f]{64}$/;
const HEX_DIGEST = /^(?:[0-9a-f]{2})+$/;
/** Codec settings strings are short (`bzip2:9` style); anything longer is a caller bug. */
const MAX_CODEC_SETTINGS_LENGTH = 4096;
/** Longest accepted signer fingerprint (hex): sha512 is 128, leave room for a composite digest. */
const MAX_FINGERPRINT_LENGTH = 256;

/** Domain separation: a digest of these bytes can never collide with another marsign digest. */
const DOMAIN = 'marsign/cache-key';
const OUTPUT_DOMAIN = 'marsign/locale-output-key';
const SIGNATURE_DOMAIN = 'marsign/pe-signature-key';
const CHECK_DOMAIN = 'marsign/passthrough-check-key';
/** Caps on the list parts of an output key (a config has at most 8 MAR keys; globs are few). */
const MAX_MAR_KEYS = 64;
const MAX_GLOBS = 4096;
const MAX_FIELD_LENGTH = 4096;

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
      'CACHE_BAD_KEY_PART' satisfies CacheErrorCode,
      `signerFingerprint must be a lowercase hex digest, got ${describe(signerFingerprint)}`,
    );
  if (
    typeof codecSettings !== 'string' ||
    codecSettings.length === 0 ||
    codecSettings.length > MAX_CODEC_SETTINGS_LENGTH
  )
    throw new CodedError(
      'CACHE_BAD_KEY_PART' satisfies CacheErrorCode,
      `codecSettings must be a non-empty string of at most ${MAX_CODEC_SETTINGS_LENGTH} characters, got ${describe(codecSettings)}`,
    );
  if (typeof inputSha256 !== 'string' || !CACHE_KEY_PATTERN.test(inputSha256))
    throw new CodedError(
      'CACHE_BAD_KEY_PART' satisfies CacheErrorCode,
      `inputSha256 must be 64 lowercase hex digits, got ${describe(inputSha256)}`,
    );

  return digestFields([DOMAIN, String(CACHE_FORMAT_VERSION), signerFingerprint, codecSettings, inputSha256]);
}

/**
 * Where a PE's Authenticode signature (the certificate table's SignedData) is stored: over the signer
 * and the Authenticode image digest of the unsigned PE with the length it covers. Two entries whose
 * stored bytes differ (another codec, another container) but hold the same PE share this key, so the
 * PE is signed once and both get the same signed bytes.
 */
export function signatureKey(parts: SignatureKeyParts): string {
  const { signerFingerprint, imageDigest, imageLength } = parts;
  if (
    typeof signerFingerprint !== 'string' ||
    signerFingerprint.length > MAX_FINGERPRINT_LENGTH ||
    !HEX_DIGEST.test(signerFingerprint)
  )
    throw badPart('signerFingerprint must be a lowercase hex digest', signerFingerprint);
  if (typeof imageDigest !== 'string' || imageDigest.length > 128 || !HEX_DIGEST.test(imageDigest))
    throw badPart('imageDigest must be a lowercase hex digest', imageDigest);
  if (!Number.isSafeInteger(imageLength) || imageLength < 0)
    throw badPart('imageLength must be a non-negative integer', imageLength);
  return digestFields([
    SIGNATURE_DOMAIN,
    String(CACHE_FORMAT_VERSION),
    signerFingerprint,
    imageDigest,
    String(imageLength),
  ]);
}

/**
 * The marker key of a passthrough entry's integrity check: over its own domain tag, the stored bytes'
 * sha256, the codec, the decode bounds and the declared decoded facts (`CheckKeyParts`). Another bound
 * (a stricter limit) or another declared CRC is another key: the check is made again.
 */
export function checkKey(parts: CheckKeyParts): string {
  const { inputSha256, codecSettings, maxEntrySize, maxCompressionRatio, expect } = parts;
  if (typeof inputSha256 !== 'string' || !CACHE_KEY_PATTERN.test(inputSha256))
    throw badPart('inputSha256 must be 64 lowercase hex digits', inputSha256);
  if (
    typeof codecSettings !== 'string' ||
    codecSettings.length === 0 ||
    codecSettings.length > MAX_CODEC_SETTINGS_LENGTH
  )
    throw badPart('codecSettings must be a non-empty string', codecSettings);
  if (!Number.isSafeInteger(maxEntrySize) || maxEntrySize < 0)
    throw badPart('maxEntrySize must be a non-negative integer', maxEntrySize);
  if (typeof maxCompressionRatio !== 'number' || !(maxCompressionRatio > 0))
    throw badPart('maxCompressionRatio must be a positive number (Infinity allowed)', maxCompressionRatio);
  if (
    expect !== null &&
    (typeof expect !== 'object' ||
      !Number.isSafeInteger(expect.size) ||
      expect.size < 0 ||
      !Number.isInteger(expect.crc32) ||
      expect.crc32 < 0 ||
      expect.crc32 > 0xffffffff)
  )
    throw badPart('expect must be null or a size and a u32 crc32', expect);
  return digestFields([
    CHECK_DOMAIN,
    String(CACHE_FORMAT_VERSION),
    inputSha256,
    codecSettings,
    String(maxEntrySize),
    String(maxCompressionRatio),
    expect === null ? '' : `${expect.size}:${expect.crc32}`,
  ]);
}

/**
 * The content address of a whole signed locale (the locale-output tier): hex sha256 over its own
 * domain tag, both format versions, the input MAR's sha256 and everything else that decides the output
 * bytes (`OutputKeyParts`). Fields are length-prefixed as in `cacheKey`; each list is preceded by its
 * length, so no two different part sets share an encoding.
 */
export function outputCacheKey(parts: OutputKeyParts): string {
  const { inputSha256, signerFingerprint, marKeys, marAlgorithm, policy, toolVersion, verifyPassthrough } =
    parts;
  if (typeof inputSha256 !== 'string' || !CACHE_KEY_PATTERN.test(inputSha256))
    throw badPart('inputSha256 must be 64 lowercase hex digits', inputSha256);
  if (
    typeof signerFingerprint !== 'string' ||
    signerFingerprint.length > MAX_FINGERPRINT_LENGTH ||
    !HEX_DIGEST.test(signerFingerprint)
  )
    throw badPart('signerFingerprint must be a lowercase hex digest', signerFingerprint);
  if (!Array.isArray(marKeys) || marKeys.length > MAX_MAR_KEYS)
    throw badPart(`marKeys must be an array of at most ${MAX_MAR_KEYS} fingerprints`, marKeys);
  for (const k of marKeys)
    if (typeof k !== 'string' || k.length > MAX_FINGERPRINT_LENGTH || !HEX_DIGEST.test(k))
      throw badPart('marKeys must hold lowercase hex digests', k);
  if (marAlgorithm !== null && (typeof marAlgorithm !== 'string' || !/^[a-z0-9-]{1,32}$/.test(marAlgorithm)))
    throw badPart('marAlgorithm must be a digest name or null', marAlgorithm);
  if (marAlgorithm === null && marKeys.length > 0)
    throw badPart('marAlgorithm must be set when marKeys are given', marAlgorithm);
  const globs = (what: string, list: unknown): string[] => {
    if (!Array.isArray(list) || list.length > MAX_GLOBS)
      throw badPart(`policy.${what} must be an array of at most ${MAX_GLOBS} globs`, list);
    for (const g of list)
      if (typeof g !== 'string' || g.length === 0 || g.length > MAX_FIELD_LENGTH)
        throw badPart(`policy.${what} must hold non-empty strings`, g);
    return list as string[];
  };
  const include = globs('include', policy?.include);
  const exclude = globs('exclude', policy?.exclude);
  if (policy.onInvalid !== 'error' && policy.onInvalid !== 'skip')
    throw badPart('policy.onInvalid must be "error" or "skip"', policy.onInvalid);
  if (typeof toolVersion !== 'string' || toolVersion.length === 0 || toolVersion.length > 256)
    throw badPart('toolVersion must be a non-empty string', toolVersion);
  if (typeof verifyPassthrough !== 'boolean')
    throw badPart('verifyPassthrough must be a boolean', verifyPassthrough);
  return digestFields([
    OUTPUT_DOMAIN,
    String(CACHE_FORMAT_VERSION),
    String(OUTPUT_FORMAT_VERSION),
    inputSha256,
    signerFingerprint,
    marAlgorithm ?? '',
    String(marKeys.length),
    ...marKeys,
    String(include.length),
    ...include,
    String(exclude.length),
    ...exclude,
    policy.onInvalid,
    toolVersion,
    verifyPassthrough ? 'verify-passthrough' : 'unverified-passthrough',
  ]);
}

/** sha256 over the fields, each prefixed by its u32be byte length. */
function digestFields(fields: string[]): string {
  const h = createHash('sha256');
  for (const field of fields) {
    const bytes = Buffer.from(field, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    h.update(len);
    h.update(bytes);
  }
  return h.digest('hex');
}

function badPart(what: string, v: unknown): CodedError {
  return new CodedError('CACHE_BAD_KEY_PART' satisfies CacheErrorCode, `${what}, got ${describe(v)}`);
}

/** Throw unless `key` is a well-formed cache key (it becomes a file name, so this also stops `../`). */
export function assertCacheKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || !CACHE_KEY_PATTERN.test(key))
    throw new CodedError(
      'CACHE_BAD_KEY' satisfies CacheErrorCode,
      `cache key must be 64 lowercase hex digits, got ${describe(key)}`,
    );
}

function describe(v: unknown): string {
  if (typeof v !== 'string') return typeof v;
  return JSON.stringify(v.length > 80 ? v.slice(0, 80) + '…' : v);
}
