/**
 * MAR (Mozilla ARchive) types, limits and error codes (docs/ARCHITECTURE.md "MAR format";
 * byte layout in ../shared/docs/mar-format.md).
 */
import { FormatError } from '../../errors.js';

/** libmar MAX_SIZE_OF_MAR_FILE (mar-format.md §10); margo limitMaxFileSize. */
export const MAR_MAX_FILE_SIZE = 524_288_000;
/** libmar MAX_SIGNATURES (src/mar.h). */
export const MAR_MAX_SIGNATURES = 8;
/** libmar MAX_SIGNATURE_LENGTH; margo limitMaxSignatureSize. */
export const MAR_MAX_SIGNATURE_LENGTH = 2048;
/** margo limitFileNameLength. */
export const MAR_MAX_NAME_LENGTH = 1024;
/**
 * Our cap on the index: no peer has one (libmar loads ≤ 500 MiB), but a Firefox complete MAR's
 * index is ~300 KiB (≈4k entries), so 16 MiB / 65536 entries leaves two orders of magnitude.
 */
export const MAR_MAX_INDEX_SIZE = 16 * 1024 * 1024;
export const MAR_MAX_ENTRIES = 65_536;
/** No peer caps the number of additional sections; every writer emits at most 1 (§4.1). */
export const MAR_MAX_ADDITIONAL_SECTIONS = 8;
/** margo limitMaxAdditionalDataSize (one block, header included). */
export const MAR_MAX_ADDITIONAL_SECTION_SIZE = 10 * 1024 * 1024;
/** libmar's reader rejects a PIB whose data part exceeds 96 bytes (MAXADDITIONALBLOCKSIZE). */
export const MAR_MAX_PRODUCT_INFO_DATA = 96;
/** libmar PIB_MAX_MAR_CHANNEL_ID_SIZE / PIB_MAX_PRODUCT_VERSION_SIZE (src/mar_private.h). */
export const MAR_MAX_CHANNEL_LENGTH = 63;
export const MAR_MAX_VERSION_LENGTH = 31;
/** libmar writes 8 + 63 + 31 + 2 = 104 bytes whatever the strings' lengths (§4.2). */
export const MAR_PADDED_PRODUCT_INFO_SIZE = 104;
/** Smallest modern MAR: margo limitMinFileSize 4+4+8+4+12 (an index with no names would be 12 + 4). */
export const MAR_MIN_FILE_SIZE = 12;

export const MAR_MAGIC = 0x4d415231; // "MAR1"
export const MAR_OLD_STYLE_DATA_START = 8;
/** Offset of num_signatures in a modern MAR (libmar SIGNATURE_BLOCK_OFFSET). */
export const MAR_SIGNATURE_BLOCK_OFFSET = 16;
export const MAR_ADDITIONAL_ID_PRODUCT_INFO = 1;

/** Signature algorithm ids (§3): 1 RSA-SHA1, 2 RSA-SHA384 (libmar, mardor), 3/4 ECDSA (margo only). */
export const MAR_SIGNATURE_ALGORITHMS: Readonly<Record<number, string>> = {
  1: 'RSA-PKCS1-SHA1',
  2: 'RSA-PKCS1-SHA384',
  3: 'ECDSA-P256-SHA256',
  4: 'ECDSA-P384-SHA384',
};

export type MarErrorCode =
  | 'MAR_BAD_MAGIC'
  | 'MAR_TRUNCATED'
  | 'MAR_TOO_LARGE'
  | 'MAR_INDEX_OUT_OF_BOUNDS'
  | 'MAR_INDEX_SIZE_MISMATCH'
  | 'MAR_INDEX_TOO_LARGE'
  | 'MAR_TOO_MANY_ENTRIES'
  | 'MAR_EMPTY_INDEX'
  | 'MAR_ENTRY_OUT_OF_BOUNDS'
  | 'MAR_ENTRY_OVERLAP'
  | 'MAR_UNREFERENCED_BYTES'
  | 'MAR_BAD_NAME'
  | 'MAR_DUPLICATE_NAME'
  | 'MAR_TOO_MANY_SIGNATURES'
  | 'MAR_SIGNATURE_TOO_LARGE'
  | 'MAR_UNKNOWN_SIGNATURE_ALGORITHM'
  | 'MAR_HEADER_OUT_OF_BOUNDS'
  | 'MAR_FILE_SIZE_MISMATCH'
  | 'MAR_TRAILING_BYTES'
  | 'MAR_TOO_MANY_ADDITIONAL_SECTIONS'
  | 'MAR_ADDITIONAL_SECTION_INVALID'
  | 'MAR_PRODUCT_INFO_INVALID'
  | 'MAR_NOT_SIGNABLE'
  | 'MAR_WRITER_STATE'
  | 'MAR_SIGNATURE_SLOT_MISMATCH'
  | 'MAR_UNSAFE_EXTRACT'
  | 'MAR_EXTRACT_TOO_LARGE';

export const MAR_FORMAT = 'mar';

export function marError(code: MarErrorCode, message: string, offset?: number): FormatError {
  return new FormatError(MAR_FORMAT, code, message, offset);
}

export interface MarEntry {
  name: string;
  /** Absolute offset of the stored bytes. */
  offset: number;
  /** Stored (possibly compressed) size. */
  size: number;
  /** Unix permission bits as stored (not masked; apply `& 0o777` at most). */
  flags: number;
}

export interface MarSignatureInfo {
  algorithmId: number;
  length: number;
  /** Offset of the signature bytes (after the 8-byte id/length header). */
  offset: number;
}

export interface ProductInfo {
  channel: string;
  version: string;
}

export interface MarAdditionalSection {
  id: number;
  /** Offset of the block (its 8-byte size/id header). */
  offset: number;
  /** Whole block size, header included. */
  size: number;
}

export interface MarInfo {
  style: 'old' | 'modern';
  /** Real size of the file. */
  fileSize: number;
  /** The u64 file_size field (modern MARs only). */
  declaredFileSize?: number;
  indexOffset: number;
  signatures: MarSignatureInfo[];
  /** Whether a u32 additional-section count is present (absent in signmar-signed old-style MARs, §4.3). */
  hasAdditionalHeader: boolean;
  additionalSections: MarAdditionalSection[];
  /** `padded`: libmar's fixed 104-byte block (true) or mardor's exact size (false). */
  productInfo?: ProductInfo & { padded: boolean };
  /** In index order. */
  entries: MarEntry[];
  /** Where the entry data begins (the lowest entry offset). */
  dataStart: number;
}

export interface ReadMarOptions {
  /**
   * Accept a modern MAR whose file_size field differs from the real size, and bytes after the index.
   * For signature verifiers only: libmar's verifier hashes to the real EOF, so such a file must still be
   * readable to be reported "invalid" (fixture manipulated_signed.mar). Default false: MAR_FILE_SIZE_MISMATCH.
   */
  allowSizeMismatch?: boolean;
  /**
   * Accept entry names that would be unsafe to extract (absolute, `..`, backslashes, control characters),
   * for listing only. Extraction always re-validates names. Default false: MAR_BAD_NAME.
   */
  allowUnsafeNames?: boolean;
}
