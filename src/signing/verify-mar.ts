import { constants, createHash, publicDecrypt, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../errors.js';
import { signingError } from './errors.js';
import { FileSource } from '../io/byte-source.js';
import { readMar, signableChunks } from '../formats/mar/index.js';
import { digestInfo } from '../keys/node-rsa.js';
import { publicKeyFrom } from '../keys/pem.js';
import type { HashName } from '../keys/types.js';
import type { CheckStatus } from './check.js';

/** libmar MAR_MAX_CERT_SIZE (mar-format.md §8). */
export const MAX_MAR_CERT_BYTES = 16 * 1024;

/** Algorithm ids libmar/mardor verify (§3); 3/4 (margo ECDSA) are reported unsupported. */
const HASH_OF_ALGORITHM: Readonly<Record<number, HashName>> = { 1: 'sha1', 2: 'sha384' };

export interface MarSignatureResult {
  index: number;
  algorithmId: number;
  /** Verified with certificate `index`. Never true for a signature that was not checked. */
  valid: boolean;
  /** `invalid` also when it cannot be checked (unsupported algorithm, no certificate for it). */
  status: CheckStatus;
  reason?: string;
}

export interface MarVerifyResult {
  valid: boolean;
  /** `ok` only when `valid`. */
  status: CheckStatus;
  signatures: MarSignatureResult[];
  problems: string[];
}

/**
 * A certificate or public key: a Uint8Array (DER certificate, DER SPKI/PKCS#1, or PEM bytes) or a
 * string (PEM text, or else a path to a file holding any of those).
 */
export async function marPublicKey(certOrKey: Uint8Array | string): Promise<KeyObject> {
  let bytes: Uint8Array | string = certOrKey;
  if (typeof certOrKey === 'string' && !certOrKey.includes('-----BEGIN')) {
    bytes = await readFile(certOrKey).catch((e: NodeJS.ErrnoException) => {
      throw signingError(
        ConfigError,
        'CERT_NOT_FOUND',
        `certificate ${certOrKey} cannot be read: ${e.code ?? 'error'}`,
      );
    });
  }
  if (bytes.length > MAX_MAR_CERT_BYTES) {
    throw signingError(
      ConfigError,
      'CERT_INVALID',
      `certificate is ${bytes.length} bytes (libmar limit ${MAX_MAR_CERT_BYTES})`,
    );
  }
  return publicKeyFrom(bytes);
}

/**
 * Verify a MAR's signatures as libmar does (mar_verify.c): signature i with certificate i, as many
 * certificates as signatures, the stream of §8 hashed to the real EOF (so bytes appended after the
 * declared size break it), RSA PKCS#1 v1.5 with the full DigestInfo compared. Certificate validity
 * dates are ignored, like libmar. Format errors (not a MAR, malformed index) throw FormatError.
 */
export async function verifyMar(
  path: string,
  certsOrKeys: (Uint8Array | string)[],
): Promise<MarVerifyResult> {
  const keys = await Promise.all(certsOrKeys.map((c) => marPublicKey(c)));
  const src = await FileSource.open(path);
  try {
    const info = await readMar(src, { allowSizeMismatch: true, allowUnsafeNames: true });
    const problems: string[] = [];
    if (info.style === 'old') {
      return {
        valid: false,
        status: 'invalid',
        signatures: [],
        problems: ['old-style MAR: no signature block'],
      };
    }
    if (info.declaredFileSize !== undefined && info.declaredFileSize !== info.fileSize) {
      problems.push(`file_size field says ${info.declaredFileSize} bytes, the file has ${info.fileSize}`);
    }
    if (info.signatures.length === 0) problems.push('the MAR has no signatures');
    if (keys.length !== info.signatures.length) {
      problems.push(
        `${info.signatures.length} signature(s) but ${keys.length} certificate(s) given (libmar requires one per signature, in order)`,
      );
    }
    const hashes = new Map<HashName, ReturnType<typeof createHash>>();
    for (const s of info.signatures) {
      const h = HASH_OF_ALGORITHM[s.algorithmId];
      if (h && !hashes.has(h)) hashes.set(h, createHash(h));
    }
    if (hashes.size > 0) {
      for await (const chunk of signableChunks(src, info)) for (const h of hashes.values()) h.update(chunk);
    }
    const digests = new Map([...hashes].map(([n, h]) => [n, new Uint8Array(h.digest())]));
    const signatures: MarSignatureResult[] = [];
    for (const [i, s] of info.signatures.entries()) {
      const hash = HASH_OF_ALGORITHM[s.algorithmId];
      const key = keys[i];
      let reason: string | undefined;
      if (!hash) reason = `signature ${i}: unsupported algorithm id ${s.algorithmId}`;
      else if (!key) reason = `signature ${i}: no certificate given`;
      else {
        const sig = await src.read(s.offset, s.length);
        if (!rsaPkcs1Verify(key, hash, digests.get(hash)!, sig))
          reason = `signature ${i} (algorithm id ${s.algorithmId}) does not verify with certificate ${i}`;
      }
      if (reason) problems.push(reason);
      signatures.push({
        index: i,
        algorithmId: s.algorithmId,
        valid: !reason,
        status: reason ? 'invalid' : 'ok',
        ...(reason ? { reason } : {}),
      });
    }
    const valid = problems.length === 0 && signatures.every((s) => s.valid);
    return { valid, status: valid ? 'ok' : 'invalid', signatures, problems };
  } finally {
    await src.close();
  }
}

/** RSA PKCS#1 v1.5 verification of a precomputed digest: the recovered block must equal DigestInfo‖digest. */
export function rsaPkcs1Verify(key: KeyObject, hash: HashName, digest: Uint8Array, sig: Uint8Array): boolean {
  if (key.asymmetricKeyType !== 'rsa') return false;
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (sig.length !== Math.ceil(bits / 8)) return false;
  try {
    const recovered = publicDecrypt({ key, padding: constants.RSA_PKCS1_PADDING }, sig);
    return recovered.equals(digestInfo(hash, digest));
  } catch {
    return false;
  }
}
