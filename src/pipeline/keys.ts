/**
 * Every cache key the pipeline uses, derived here and nowhere else (docs/ARCHITECTURE.md "Cache"): a signed
 * entry's (by its stored bytes, codec settings and signer), a PE signature's (by the PE's image digest and
 * signer), a passthrough entry's check marker (by its stored bytes, codec, decode bounds and declared
 * facts), and a whole locale output's (by the input file and everything that decides the output).
 */
import { cacheKey, checkKey, outputCacheKey, signatureKey } from '../../cache/key.js';
import { settingsKey } from '../codecs/index.js';
import type { CodecSettings, DecodedFacts } from '../codecs/types.js';
import type { DecodeLimits, SigningProfile } from '../config/types.js';
import { VERSION } from '../version.js';
import type { CompiledPolicy } from './policy.js';

/** The key of an entry's signed, re-encoded bytes, and the codec settings string it covers. */
export function entryKey(
  profile: SigningProfile,
  codec: CodecSettings,
  inputSha256: string,
): { key: string; codecKey: string } {
  const codecKey = settingsKey(codec);
  return {
    key: cacheKey({ signerFingerprint: profile.fingerprint, codecSettings: codecKey, inputSha256 }),
    codecKey,
  };
}

/** The key of a PE's Authenticode signature (one per signer and PE image, whatever container holds it). */
export function peSignatureKey(profile: SigningProfile, imageDigest: string, imageLength: number): string {
  return signatureKey({ signerFingerprint: profile.fingerprint, imageDigest, imageLength });
}

/**
 * The key of a passthrough entry's check marker: its stored bytes' sha256 (`inputSha256`), the codec
 * they decode with, the decode bounds in force and, for zip, the CRC-32 and size its headers declare.
 */
export function passthroughCheckKey(
  codec: CodecSettings,
  inputSha256: string,
  limits: DecodeLimits,
  expect: DecodedFacts | undefined,
): string {
  return checkKey({
    inputSha256,
    codecSettings: settingsKey(codec),
    maxEntrySize: limits.maxEntrySize,
    maxCompressionRatio: limits.maxCompressionRatio,
    expect: expect ? { size: expect.size, crc32: expect.crc32 } : null,
  });
}

/** The settings of one run that decide a locale's output beside the profile and policy. */
export interface LocaleSettings {
  /** The effective onInvalid (`--skip-invalid` or the policy's). */
  skipInvalid: boolean;
  /** Whether passthrough entries are checked before signing (`--no-verify-passthrough`, the policy's). */
  verifyPassthrough: boolean;
}

/** The locale-output key of one input under a profile, its compiled policy and the run's settings. */
export function localeOutputKey(
  profile: SigningProfile,
  policy: CompiledPolicy,
  settings: LocaleSettings,
  inputSha256: string,
): string {
  const { skipInvalid, verifyPassthrough } = settings;
  return outputCacheKey({
    inputSha256,
    signerFingerprint: profile.fingerprint,
    marKeys: profile.mar ? profile.mar.keys.map((k) => k.id) : [],
    marAlgorithm: profile.mar ? profile.mar.algorithm : null,
    policy: { include: policy.include, exclude: policy.exclude, onInvalid: skipInvalid ? 'skip' : 'error' },
    toolVersion: VERSION,
    verifyPassthrough,
  });
}
