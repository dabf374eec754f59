/** The zip format (pure, no I/O): see docs/ARCHITECTURE.md "Zip format". */
export * from './types.js';
export { readZip, readEntryData, readEntrySpan } from './reader.js';
export {
  decodeCp437,
  unsafeZipNameReason,
  assertSafeZipName,
  decodeZipName,
  encodeZipName,
} from './names.js';
export { parseExtra, encodeExtra } from './extra.js';
export {
  encodeLocalHeader,
  encodeDescriptor,
  encodeReplacedLocal,
  encodeCentralRecord,
  encodeEnd,
  endTemplateOf,
  newZipEntry,
  toDosDateTime,
  fromDosDateTime,
  type LocalHeaderFields,
  type CentralValues,
  type NewZipEntry,
  type ZipEndTemplate,
  type ZipReplacement,
} from './writer.js';
export {
  zipLayout,
  placeEntry,
  encodeTail,
  checkReplacement,
  OutputEntrySet,
  type ZipLayout,
  type ZipOutputEntry,
  type ZipPlacedEntry,
} from './layout.js';

/** `PK\3\4` (a local header) or `PK\5\6` (an empty archive's end record) at offset 0. */
export function isZipMagic(head: Uint8Array): boolean {
  return (
    head.length >= 4 &&
    head[0] === 0x50 &&
    head[1] === 0x4b &&
    ((head[2] === 0x03 && head[3] === 0x04) || (head[2] === 0x05 && head[3] === 0x06))
  );
}
