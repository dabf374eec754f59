/**
 * Every cache key the pipeline uses, derived here and nowhere else (docs/ARCHITECTURE.md "Cache"): a signed
 * entry's (by its stored bytes, codec settings and signer), a PE signature's (by the PE's image digest and
 * signer), and a whole locale output's (by the input file and everything that decides the output).
 */
import { cacheKey, outputCacheKey, signatureKey } from '../../cache/key.js';
import { settingsKey } from '../codecs/index.js';
import type { CodecSettings } from '../codecs/types.js';
import type { SigningProfile } from '../config/types.js';
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

/** The locale-output key of one input under a profile, its compiled policy and the effective onInvalid. */
export function localeOutputKey(
  profile: SigningProfile,
  policy: CompiledPolicy,
  skipInvalid: boolean,
  inputSha256: string,
): string {
  return outputCacheKey({
    inputSha256,
    signerFingerprint: profile.fingerprint,
    marKeys: profile.mar ? profile.mar.keys.map((k) => k.id) : [],
    marAlgorithm: profile.mar ? profile.mar.algorithm : null,
    policy: { include: policy.include, exclude: policy.exclude, onInvalid: skipInvalid ? 'skip' : 'error' },
    toolVersion: VERSION,
  });
}
