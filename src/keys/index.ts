/** Key backends (docs/ARCHITECTURE.md "Keys, config, signing CLI"). */
export type { HashName, SigningKey } from './types.js';
export { NodeRsaKey, digestInfo } from './node-rsa.js';
export {
  loadPemKey,
  pemBlocks,
  pemCertificates,
  publicKeyFrom,
  certificateSpki,
  isEncryptedPem,
  MAX_PEM_BYTES,
  MAX_CHAIN_CERTS,
} from './pem.js';
export { loadPkcs12, MAX_PKCS12_BYTES } from './pkcs12.js';
export { orderChain } from './pem.js';
export {
  KEY_BACKENDS,
  backendFor,
  keyRefs,
  loadKeyRef,
  type KeyBackend,
  type KeyRef,
  type LoadedKey,
} from './registry.js';
export { parsePkcs11Uri, isPkcs11Uri, displayUri, PKCS11_MODULE_ENV, type Pkcs11Uri } from './pkcs11-uri.js';
export { generateDevKeys, type DevKeys, type DevKeysOptions } from './dev.js';
