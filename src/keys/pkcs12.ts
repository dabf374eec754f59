import forge from 'node-forge';
import { createPrivateKey } from 'node:crypto';
import { ConfigError, type CodedErrorOptions } from '../errors.js';
import { NodeRsaKey } from './node-rsa.js';
import { MAX_CHAIN_CERTS, orderChain } from './pem.js';

export type Pkcs12ErrorCode = 'PKCS12_INVALID' | 'KEY_PASSPHRASE_WRONG';

function pkcs12Error(code: Pkcs12ErrorCode, message: string, options?: CodedErrorOptions): ConfigError {
  return new ConfigError(code, message, options);
}

export { orderChain };

/** PKCS#12 files bigger than this are not a key and its chain. */
export const MAX_PKCS12_BYTES = 1 << 20;

/**
 * Load a PKCS#12 (PFX) file: the RSA private key and its certificate chain ordered signer first,
 * then each issuer found in the file. node-forge parses the container; the key is handed to
 * node:crypto at once so signing never runs in pure JS.
 */
export function loadPkcs12(der: Uint8Array, passphrase: string): { key: NodeRsaKey; chainDer: Uint8Array[] } {
  if (der.length > MAX_PKCS12_BYTES) {
    throw pkcs12Error('PKCS12_INVALID', `PKCS#12 file is ${der.length} bytes (limit ${MAX_PKCS12_BYTES})`);
  }
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    const asn1 = forge.asn1.fromDer(forge.util.createBuffer(Buffer.from(der).toString('binary')));
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, false, passphrase);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/MAC could not be verified|Invalid password|decrypt/i.test(msg)) {
      throw pkcs12Error('KEY_PASSPHRASE_WRONG', 'the passphrase does not open the PKCS#12 file');
    }
    throw pkcs12Error('PKCS12_INVALID', 'the PKCS#12 file does not parse (DER PFX expected)');
  }
  const keyBags = [
    ...(p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag! })[forge.pki.oids.pkcs8ShroudedKeyBag!] ??
      []),
    ...(p12.getBags({ bagType: forge.pki.oids.keyBag! })[forge.pki.oids.keyBag!] ?? []),
  ];
  const keys = keyBags.flatMap((b) => (b.key ? [b.key] : []));
  if (keys.length !== 1) {
    throw pkcs12Error('PKCS12_INVALID', `expected 1 private key in the PKCS#12 file, found ${keys.length}`);
  }
  const key = new NodeRsaKey(
    createPrivateKey({ key: forge.pki.privateKeyToPem(keys[0] as forge.pki.rsa.PrivateKey), format: 'pem' }),
  );
  const certs: Uint8Array[] = [];
  for (const b of p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? []) {
    if (!b.cert) continue;
    const d = forge.asn1.toDer(forge.pki.certificateToAsn1(b.cert)).getBytes();
    certs.push(new Uint8Array(Buffer.from(d, 'binary')));
  }
  if (certs.length > MAX_CHAIN_CERTS) {
    throw pkcs12Error(
      'PKCS12_INVALID',
      `${certs.length} certificates in the PKCS#12 file (limit ${MAX_CHAIN_CERTS})`,
    );
  }
  return { key, chainDer: orderChain(certs, key.publicKeyDer, 'the PKCS#12 file') };
}
