/**
 * Signing keys behind a small interface, so an HSM/KMS backend can replace the file backend later
 * (docs/ARCHITECTURE.md "Keys"). Private key material never leaves the backend.
 */
export type HashName = 'sha1' | 'sha256' | 'sha384' | 'sha512';

export interface SigningKey {
  /** Stable identifier: hex sha256 of the public key's SubjectPublicKeyInfo DER. */
  readonly id: string;
  readonly type: 'rsa';
  /** Modulus length in bits (2048, 4096, ...): the signature length is bits / 8. */
  readonly bits: number;
  /** The public key as SPKI DER. */
  readonly publicKeyDer: Uint8Array;
  /** RSA PKCS#1 v1.5 signature of an already computed digest (DigestInfo is added by the backend). */
  signDigest(hash: HashName, digest: Uint8Array): Promise<Uint8Array>;
}
