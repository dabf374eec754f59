import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { ConfigError, type CodedErrorOptions } from '../errors.js';
import { NodeRsaKey } from './node-rsa.js';

export type PemErrorCode =
  | 'KEY_INVALID'
  | 'KEY_PASSPHRASE_REQUIRED'
  | 'KEY_PASSPHRASE_WRONG'
  | 'CERT_INVALID'
  | 'PUBLIC_KEY_INVALID'
  | 'KEY_CERT_MISMATCH';

function pemError(code: PemErrorCode, message: string, options?: CodedErrorOptions): ConfigError {
  return new ConfigError(code, message, options);
}

/** PEM files bigger than this are not keys or certificate chains (hostile or wrong file). */
export const MAX_PEM_BYTES = 1 << 20;
/** A certificate chain longer than this is a misconfiguration. */
export const MAX_CHAIN_CERTS = 16;

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

function asText(pem: string | Uint8Array): string {
  return typeof pem === 'string' ? pem : Buffer.from(pem).toString('latin1');
}

/** Every PEM block of the given label, decoded to DER, in file order. */
export function pemBlocks(pem: string | Uint8Array, label: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of asText(pem).matchAll(PEM_BLOCK)) {
    if (m[1] !== label) continue;
    const body = (m[2] ?? '')
      .split(/\r?\n/)
      .filter((l) => !l.includes(':'))
      .join('');
    out.push(new Uint8Array(Buffer.from(body, 'base64')));
  }
  return out;
}

/** The certificates of a PEM chain file (signer first), as DER, each checked to parse as X.509. */
export function pemCertificates(pem: string | Uint8Array): Uint8Array[] {
  const text = asText(pem);
  if (text.length > MAX_PEM_BYTES) {
    throw pemError('CERT_INVALID', `certificate file is ${text.length} bytes (limit ${MAX_PEM_BYTES})`);
  }
  const ders = pemBlocks(text, 'CERTIFICATE');
  if (ders.length === 0) throw pemError('CERT_INVALID', 'no "BEGIN CERTIFICATE" block found');
  if (ders.length > MAX_CHAIN_CERTS) {
    throw pemError('CERT_INVALID', `${ders.length} certificates in one chain (limit ${MAX_CHAIN_CERTS})`);
  }
  ders.forEach((d, i) => {
    try {
      new X509Certificate(d);
    } catch (e) {
      throw pemError('CERT_INVALID', `certificate ${i} does not parse as X.509`, { cause: e });
    }
  });
  return ders;
}

/** Whether a PEM private key is passphrase-protected (PKCS#8 encrypted or legacy Proc-Type). */
export function isEncryptedPem(pem: string | Uint8Array): boolean {
  const t = asText(pem);
  return t.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----') || /Proc-Type:\s*4,\s*ENCRYPTED/.test(t);
}

/**
 * Load an RSA private key from PEM (PKCS#1 or PKCS#8, optionally encrypted). Errors never contain
 * the passphrase or key bytes: only what was wrong.
 */
export function loadPemKey(pem: string | Uint8Array, passphrase?: string | Uint8Array): NodeRsaKey {
  const text = asText(pem);
  if (text.length > MAX_PEM_BYTES) {
    throw pemError('KEY_INVALID', `key file is ${text.length} bytes (limit ${MAX_PEM_BYTES})`);
  }
  if (!/-----BEGIN (RSA |ENCRYPTED )?PRIVATE KEY-----/.test(text)) {
    throw pemError('KEY_INVALID', 'no "BEGIN PRIVATE KEY" block found (expected an RSA private key in PEM)');
  }
  const encrypted = isEncryptedPem(text);
  if (encrypted && (passphrase === undefined || passphrase.length === 0)) {
    throw pemError('KEY_PASSPHRASE_REQUIRED', 'the key is encrypted and no passphrase is configured');
  }
  let ko: KeyObject;
  try {
    ko = createPrivateKey(
      encrypted
        ? { key: text, format: 'pem', passphrase: Buffer.from(passphrase ?? '') }
        : { key: text, format: 'pem' },
    );
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    // A wrong passphrase usually fails the CBC padding check (BAD_DECRYPT), but about 1 in 256 wrong keys
    // yields valid padding and garbage that then fails to parse (ERR_OSSL_UNSUPPORTED): for an encrypted
    // key both mean the passphrase does not open it.
    if (encrypted) {
      throw pemError(
        'KEY_PASSPHRASE_WRONG',
        `the passphrase does not decrypt the key (${code || 'unknown error'})`,
      );
    }
    throw pemError('KEY_INVALID', `the private key does not parse (${code || 'unknown error'})`);
  }
  return new NodeRsaKey(ko);
}

/**
 * A public key from a certificate or public key: PEM text (CERTIFICATE, PUBLIC KEY, RSA PUBLIC KEY)
 * or DER bytes (X.509 certificate, SPKI, PKCS#1).
 */
export function publicKeyFrom(input: string | Uint8Array): KeyObject {
  const text = asText(input);
  if (text.includes('-----BEGIN')) {
    try {
      return createPublicKey({ key: text, format: 'pem' });
    } catch (e) {
      throw pemError('PUBLIC_KEY_INVALID', 'PEM is neither a certificate nor a public key', {
        cause: e,
      });
    }
  }
  const der = Buffer.from(typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
  try {
    return new X509Certificate(der).publicKey;
  } catch {
    // not a certificate: try the bare key encodings below
  }
  for (const type of ['spki', 'pkcs1'] as const) {
    try {
      return createPublicKey({ key: der, format: 'der', type });
    } catch {
      // next encoding
    }
  }
  throw pemError('PUBLIC_KEY_INVALID', `${der.length} bytes are neither a DER certificate nor a public key`);
}

/** SPKI DER of a certificate's public key (to compare with SigningKey.publicKeyDer). */
export function certificateSpki(der: Uint8Array): Uint8Array {
  return new Uint8Array(new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' }));
}

/** Signer (the certificate of `spki`) first, then its issuer, and so on; unrelated certs dropped. */
export function orderChain(certs: Uint8Array[], spki: Uint8Array, from = 'the PKCS#12 file'): Uint8Array[] {
  const parsed = certs.map((d) => ({ der: d, x: new X509Certificate(d) }));
  const spkiBuf = Buffer.from(spki);
  const leaf = parsed.find((c) => c.x.publicKey.export({ type: 'spki', format: 'der' }).equals(spkiBuf));
  if (!leaf) throw pemError('KEY_CERT_MISMATCH', `no certificate in ${from} matches its private key`);
  const out = [leaf];
  let cur = leaf;
  while (out.length < parsed.length) {
    if (cur.x.issuer === cur.x.subject) break;
    const next = parsed.find((c) => !out.includes(c) && cur.x.checkIssued(c.x));
    if (!next) break;
    out.push(next);
    cur = next;
  }
  return out.map((c) => c.der);
}
