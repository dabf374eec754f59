export * from './types.js';
export {
  parsePe,
  isPe,
  readCertificateTable,
  findSignedData,
  MAX_CERT_ENTRIES,
  MAX_PE_HEADER_OFFSET,
} from './reader.js';
export { authenticodeDigest, authenticodeRanges } from './digest.js';
export { computeChecksum } from './checksum.js';
export {
  stripCertificateTable,
  writeCertificateTable,
  certificateTableSize,
  updateChecksum,
} from './writer.js';
export { buildPe, type BuildPeOptions } from './synth.js';
