/** The MAR format (pure, no I/O): see docs/ARCHITECTURE.md "MAR format". */
export * from './types.js';
export { readMar, readEntryBytes } from './reader.js';
export { signableRanges, signableChunks, type ByteRange } from './signable.js';
export { unsafeNameReason, assertSafeName, decodeEntryName, entryCodecOf } from './names.js';
export {
  marHeaderLayout,
  encodeHeaderFields,
  encodeIndex,
  encodeProductInfo,
  validateProductInfo,
  validateSignatureSlots,
  type MarHeaderLayout,
  type MarLayoutOptions,
  type SignatureSlot,
} from './writer.js';
