import { constants, createHash, createPublicKey, privateEncrypt, type KeyObject } from 'node:crypto';
import { ConfigError, type CodedErrorOptions } from '../errors.js';
import type { HashName, SigningKey } from './types.js';

export type NodeRsaErrorCode =
  'KEY_INVALID' | 'KEY_NOT_PRIVATE' | 'KEY_UNSUPPORTED' | 'KEY_UNSUPPORTED_HASH' | 'KEY_BAD_DIGEST_LENGTH';

function rsaError(code: NodeRsaErrorCode, message: string, options?: CodedErrorOptions): ConfigError {
  return new ConfigError(code, message, options);
}

/**
 * DER DigestInfo prefixes (RFC 8017 §9.2 note 1): PKCS#1 v1.5 signs DigestInfo(hashAlg, digest),
 * so a raw RSA private-key operation over prefix‖digest with PKCS#1 type-1 padding is the signature.
 */
const DIGEST_INFO: Record<HashName, { prefix: Buffer; length: number }> = {
  sha1: { prefix: Buffer.from('3021300906052b0e03021a05000414', 'hex'), length: 20 },
  sha256: { prefix: Buffer.from('3031300d060960864801650304020105000420', 'hex'), length: 32 },
  sha384: { prefix: Buffer.from('3041300d060960864801650304020205000430', 'hex'), length: 48 },
  sha512: { prefix: Buffer.from('3051300d060960864801650304020305000440', 'hex'), length: 64 },
};

/** The DER DigestInfo for `digest` (what PKCS#1 v1.5 pads and signs). */
export function digestInfo(hash: HashName, digest: Uint8Array): Buffer {
  const d = DIGEST_INFO[hash];
  if (!d) throw rsaError('KEY_UNSUPPORTED_HASH', `unsupported hash ${String(hash)}`);
  if (digest.length !== d.length) {
    throw rsaError('KEY_BAD_DIGEST_LENGTH', `a ${hash} digest is ${d.length} bytes, got ${digest.length}`);
  }
  return Buffer.concat([d.prefix, digest]);
}

/**
 * An RSA key held in a node:crypto KeyObject. The private KeyObject sits in a #private field, so
 * neither JSON.stringify nor util.inspect of the wrapper can reveal it.
 */
export class NodeRsaKey implements SigningKey {
  readonly type = 'rsa' as const;
  readonly id: string;
  readonly bits: number;
  readonly publicKeyDer: Uint8Array;
  readonly #key: KeyObject;

  constructor(privateKey: KeyObject) {
    if (privateKey.type !== 'private') {
      throw rsaError('KEY_NOT_PRIVATE', `expected a private key, got a ${privateKey.type} key`);
    }
    if (privateKey.asymmetricKeyType !== 'rsa') {
      throw rsaError(
        'KEY_UNSUPPORTED',
        `only RSA keys are supported, got ${String(privateKey.asymmetricKeyType)}`,
      );
    }
    this.#key = privateKey;
    const bits = privateKey.asymmetricKeyDetails?.modulusLength;
    if (!bits) throw rsaError('KEY_INVALID', 'RSA key without a modulus length');
    this.bits = bits;
    const spki = createPublicKeyDer(privateKey);
    this.publicKeyDer = new Uint8Array(spki);
    this.id = createHash('sha256').update(spki).digest('hex');
  }

  async signDigest(hash: HashName, digest: Uint8Array): Promise<Uint8Array> {
    return this.signDigestSync(hash, digest);
  }

  /** The same signature, synchronously (the MAR signer and benchmarks sign in a tight loop). */
  signDigestSync(hash: HashName, digest: Uint8Array): Uint8Array {
    const sig = privateEncrypt(
      { key: this.#key, padding: constants.RSA_PKCS1_PADDING },
      digestInfo(hash, digest),
    );
    return new Uint8Array(sig.buffer, sig.byteOffset, sig.length);
  }

  toJSON(): { type: 'rsa'; id: string; bits: number } {
    return { type: this.type, id: this.id, bits: this.bits };
  }
}

function createPublicKeyDer(privateKey: KeyObject): Buffer {
  return createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
}
