/**
 * Zip types, limits and error codes (docs/ARCHITECTURE.md "Zip format"). Field layouts follow PKWARE's
 * APPNOTE.TXT 6.3.10 (§ numbers below refer to it); hostile-input rules follow yauzl's and add the
 * local-header, overlap and gap checks yauzl leaves out.
 */
import { FormatError } from '../../errors.js';

/**
 * Our cap on the whole file. A Windows build zip (Mozilla's `target.zip`) is a few hundred MB; 8 GiB
 * leaves room for zip64 archives while keeping every offset far below 2^53.
 */
export const ZIP_MAX_FILE_SIZE = 8 * 1024 * 1024 * 1024;
/** Entries in one archive. Above 65535 the count needs zip64 (§4.4.21), which we read and write. */
export const ZIP_MAX_ENTRIES = 131_072;
/** The central directory is read whole: 64 MiB is ~500k records of an average Firefox path length. */
export const ZIP_MAX_CENTRAL_DIRECTORY_SIZE = 64 * 1024 * 1024;
/** Same cap as MAR names (margo limitFileNameLength); the format allows 65535. */
export const ZIP_MAX_NAME_LENGTH = 1024;
/**
 * Declared uncompressed size of one entry: the codec module's per-entry cap (DEFAULT_MAX_OUTPUT_SIZE,
 * 1 GiB). xul.dll, the largest file of a Firefox build, is ~150 MB.
 */
export const ZIP_MAX_ENTRY_SIZE = 1024 * 1024 * 1024;
/**
 * Declared uncompressed : compressed ratio above which an entry is a bomb. Deflate tops out at ~1032:1;
 * PE files compress 2-4:1 and text ~10:1, so 200:1 refuses bombs without touching real builds.
 */
export const ZIP_MAX_RATIO = 200;
/** Entries of at most this many uncompressed bytes are never refused for their ratio (bounded harm). */
export const ZIP_RATIO_MIN_SIZE = 1024 * 1024;

/** §4.3.16: 22 fixed bytes + a comment of up to 65535 bytes, so the EOCD is in the last 65557 bytes. */
export const ZIP_EOCD_SIZE = 22;
export const ZIP_MAX_COMMENT_LENGTH = 0xffff;
export const ZIP_EOCD_SEARCH = ZIP_EOCD_SIZE + ZIP_MAX_COMMENT_LENGTH;
export const ZIP64_EOCD_LOCATOR_SIZE = 20;
/** Fixed part of the zip64 EOCD record (§4.3.14), up to and including the central-directory offset. */
export const ZIP64_EOCD_SIZE = 56;
/** Zip64 end records larger than this (extensible data) are refused. */
export const ZIP64_MAX_EOCD_SIZE = 64 * 1024;
export const ZIP_LOCAL_HEADER_SIZE = 30;
export const ZIP_CENTRAL_HEADER_SIZE = 46;

export const ZIP_SIG_LOCAL = 0x04034b50; // "PK\3\4"
export const ZIP_SIG_CENTRAL = 0x02014b50; // "PK\1\2"
export const ZIP_SIG_EOCD = 0x06054b50; // "PK\5\6"
export const ZIP_SIG_ZIP64_EOCD = 0x06064b50; // "PK\6\6"
export const ZIP_SIG_ZIP64_LOCATOR = 0x07064b50; // "PK\6\7"
export const ZIP_SIG_DESCRIPTOR = 0x08074b50; // "PK\7\8"

/** The zip64 sentinels (§4.4.8, §4.4.13): the real value is in a zip64 field. */
export const ZIP_U32_SENTINEL = 0xffffffff;
export const ZIP_U16_SENTINEL = 0xffff;

/** Extra-field header ids (§4.5.2, §4.6.9). */
export const ZIP_EXTRA_ZIP64 = 0x0001;
export const ZIP_EXTRA_UNICODE_PATH = 0x7075;

/** General-purpose flag bits (§4.4.4). */
export const ZIP_FLAG_ENCRYPTED = 1 << 0;
export const ZIP_FLAG_DESCRIPTOR = 1 << 3;
export const ZIP_FLAG_STRONG_ENCRYPTION = 1 << 6;
export const ZIP_FLAG_UTF8 = 1 << 11;
export const ZIP_FLAG_CD_ENCRYPTED = 1 << 13;

export const ZIP_METHOD_STORED = 0;
export const ZIP_METHOD_DEFLATE = 8;
/** Version needed to extract a zip64 entry (§4.4.3.2: 4.5). */
export const ZIP_VERSION_ZIP64 = 45;

export type ZipErrorCode =
  | 'ZIP_TRUNCATED'
  | 'ZIP_TOO_LARGE'
  | 'ZIP_NO_EOCD'
  | 'ZIP_TRAILING_BYTES'
  | 'ZIP_AMBIGUOUS_EOCD'
  | 'ZIP_MULTI_DISK'
  | 'ZIP_ZIP64_INVALID'
  | 'ZIP_CENTRAL_DIRECTORY_OUT_OF_BOUNDS'
  | 'ZIP_CENTRAL_DIRECTORY_TOO_LARGE'
  | 'ZIP_CENTRAL_DIRECTORY_INVALID'
  | 'ZIP_TOO_MANY_ENTRIES'
  | 'ZIP_EXTRA_FIELD_INVALID'
  | 'ZIP_BAD_NAME'
  | 'ZIP_DUPLICATE_NAME'
  | 'ZIP_ENCRYPTED'
  | 'ZIP_UNSUPPORTED_METHOD'
  | 'ZIP_STORED_SIZE_MISMATCH'
  | 'ZIP_ENTRY_TOO_LARGE'
  | 'ZIP_RATIO_TOO_HIGH'
  | 'ZIP_LOCAL_HEADER_OUT_OF_BOUNDS'
  | 'ZIP_LOCAL_HEADER_INVALID'
  | 'ZIP_LOCAL_HEADER_MISMATCH'
  | 'ZIP_ENTRY_OUT_OF_BOUNDS'
  | 'ZIP_ENTRY_OVERLAP'
  | 'ZIP_UNREFERENCED_BYTES'
  | 'ZIP_DESCRIPTOR_INVALID'
  // Found when an entry's data is decoded (src/zip), not by readZip.
  | 'ZIP_CRC_MISMATCH'
  | 'ZIP_SIZE_MISMATCH'
  // Writer and extraction.
  | 'ZIP_WRITER_STATE'
  | 'ZIP_UNSAFE_EXTRACT'
  | 'ZIP_EXTRACT_TOO_LARGE';

export const ZIP_FORMAT = 'zip';

export function zipError(code: ZipErrorCode, message: string, offset?: number): FormatError {
  return new FormatError(ZIP_FORMAT, code, message, offset);
}

/** One extra-field record (§4.5.1) as stored: header id, then its data (the 4-byte header excluded). */
export interface ZipExtraRecord {
  id: number;
  data: Uint8Array;
}

/** Central fields whose stored value was the zip64 sentinel (the value came from the zip64 extra field). */
export interface ZipZip64Fields {
  uncompressedSize: boolean;
  compressedSize: boolean;
  localHeaderOffset: boolean;
  diskStart: boolean;
}

/** The local file header (§4.3.7) as stored. The name bytes equal the central record's (checked). */
export interface ZipLocalHeader {
  versionNeeded: number;
  flags: number;
  method: number;
  dosTime: number;
  dosDate: number;
  /**
   * The raw 32-bit fields: each is the real value, 0 when a data descriptor follows (flag bit 3), or
   * for the sizes the zip64 sentinel 0xFFFFFFFF with the values (or zeros) in the local zip64 extra field.
   */
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  /** Raw local extra field (may differ from the central one, e.g. Info-ZIP's UT field). */
  extra: Uint8Array;
  /** 30 + name length + extra length. */
  length: number;
}

/** The data descriptor (§4.3.9) after an entry's data when flag bit 3 is set, in its exact stored form. */
export interface ZipDataDescriptor {
  /** Starts with the optional PK\7\8 signature. */
  signature: boolean;
  /** 8-byte sizes (zip64) rather than 4-byte. */
  zip64: boolean;
  /** 12, 16, 20 or 24 bytes. */
  length: number;
}

export interface ZipEntry {
  /** Position in the central directory (0-based): the order the output's central directory keeps. */
  index: number;
  /** The decoded name (UTF-8 if flag bit 11, else CP437; a valid Info-ZIP Unicode Path field wins). */
  name: string;
  /** The stored name bytes. */
  nameBytes: Uint8Array;
  /** Flag bit 11: the name and comment are UTF-8. */
  utf8: boolean;
  /** The name ends with `/`. */
  isDirectory: boolean;
  /** Offset of the central directory record. */
  centralOffset: number;
  // Central directory record (§4.3.12), sizes and offset resolved through the zip64 field.
  versionMadeBy: number;
  versionNeeded: number;
  flags: number;
  method: number;
  dosTime: number;
  dosDate: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  diskStart: number;
  internalAttributes: number;
  externalAttributes: number;
  localHeaderOffset: number;
  /** Raw central extra field. */
  extra: Uint8Array;
  /** Raw file comment. */
  comment: Uint8Array;
  /** Which central fields held the zip64 sentinel (kept as zip64 on rewrite). */
  zip64: ZipZip64Fields;
  local: ZipLocalHeader;
  /** Offset of the compressed data (localHeaderOffset + local.length). */
  dataOffset: number;
  descriptor?: ZipDataDescriptor;
  /** End of the entry's bytes: data, then the descriptor if any. */
  end: number;
}

/** The end-of-central-directory record (§4.3.16): the raw fields as stored. */
export interface ZipEocd {
  offset: number;
  diskNumber: number;
  centralDirectoryDisk: number;
  entriesOnDisk: number;
  totalEntries: number;
  centralDirectorySize: number;
  centralDirectoryOffset: number;
}

/** The zip64 end-of-central-directory record (§4.3.14) and its locator (§4.3.15). */
export interface ZipZip64End {
  offset: number;
  /** The record's size field (the record's length minus 12). */
  recordSize: number;
  versionMadeBy: number;
  versionNeeded: number;
  diskNumber: number;
  centralDirectoryDisk: number;
  entriesOnDisk: number;
  totalEntries: number;
  centralDirectorySize: number;
  centralDirectoryOffset: number;
  /** The extensible data sector after the fixed fields (opaque, kept). */
  extensible: Uint8Array;
  locatorOffset: number;
  locatorDisk: number;
  locatorTotalDisks: number;
}

export interface ZipInfo {
  fileSize: number;
  /** In central-directory order. */
  entries: ZipEntry[];
  centralDirectoryOffset: number;
  centralDirectorySize: number;
  eocd: ZipEocd;
  zip64?: ZipZip64End;
  /** Raw archive comment. */
  comment: Uint8Array;
}

export interface ReadZipOptions {
  /**
   * Accept entry names that would be unsafe to extract (absolute, `..`, backslashes, control characters),
   * for listing only. Extraction always re-validates names. Default false: ZIP_BAD_NAME.
   */
  allowUnsafeNames?: boolean;
  /** Declared uncompressed size cap per entry (default ZIP_MAX_ENTRY_SIZE). */
  maxEntrySize?: number;
  /** Declared ratio cap (default ZIP_MAX_RATIO; applies above ZIP_RATIO_MIN_SIZE bytes). */
  maxRatio?: number;
}
