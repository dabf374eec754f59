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
export { loadPkcs12, orderChain, MAX_PKCS12_BYTES } from './pkcs12.js';
export { generateDevKeys, type DevKeys, type DevKeysOptions } from './dev.js';
