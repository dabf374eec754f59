/** Zip I/O over the format (docs/ARCHITECTURE.md "Zip format"). */
export {
  openZip,
  readEntryContent,
  extractZip,
  createZip,
  rewriteZip,
  readZipBuffer,
  entryMode,
  isSymlinkEntry,
  ZIP_MAX_EXTRACT_TOTAL,
  type OpenZip,
  type EntryContentOptions,
  type ExtractZipOptions,
  type ExtractZipResult,
  type CreateZipFile,
} from './file.js';
export { ZipWriter, type ZipWriterOptions, type ZipWriteResult } from './writer.js';
export {
  zipLayout,
  type ZipLayout,
  type ZipOutputEntry,
  type ZipPlacedEntry,
} from '../formats/zip/layout.js';
