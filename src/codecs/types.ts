/**
 * Entry codecs (contract). A MAR entry is one complete bzip2 or xz stream, or raw bytes
 * (docs/mar-format.md §9). Recompression must reproduce the original settings.
 */
export type CodecName = 'none' | 'bz2' | 'xz';

export type XzCheck = 'none' | 'crc32' | 'crc64' | 'sha256';

export type CodecSettings =
  | { codec: 'none' }
  /** bzip2 block size in units of 100 kB, from the `BZh1`..`BZh9` header. */
  | { codec: 'bz2'; level: number }
  /**
   * xz: LZMA2 dictionary size in bytes (from the block header's LZMA2 filter properties), whether the
   * x86 BCJ filter precedes LZMA2, and the stream's integrity check.
   */
  | { codec: 'xz'; dictSize: number; x86: boolean; check: XzCheck };

export interface DecodeOptions {
  /** Decompressed-size cap: a larger output is a FormatError `CODEC_OUTPUT_TOO_LARGE` (bomb). */
  maxOutputSize?: number;
  /**
   * The codec the bytes are in, when the container says so (zip's method); default: sniffed from the
   * bytes themselves (a MAR entry is a self-describing stream).
   */
  settings?: CodecSettings;
}

/** Default decompressed-size cap per entry: 1 GiB (a MAR is at most 500 MiB compressed). */
export const DEFAULT_MAX_OUTPUT_SIZE = 1024 * 1024 * 1024;

/**
 * What an entry's stored bytes decode to: its length and CRC-32 (ISO-HDLC, as zip and zlib compute it).
 * Recorded by the signer for every re-encoded entry; a container that states them in its headers (zip)
 * takes them from here instead of decoding the entry again.
 */
export interface DecodedFacts {
  size: number;
  crc32: number;
}
