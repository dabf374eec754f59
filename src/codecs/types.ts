/**
 * Entry codecs (contract). A MAR entry is one complete bzip2 or xz stream, or raw bytes
 * (docs/mar-format.md §9); a zip entry is raw deflate or stored, as its method says. Recompression
 * reproduces the original settings (deflate: a documented level, the input's own is not recorded).
 */
export type CodecName = 'none' | 'bz2' | 'xz' | 'deflate';

export type XzCheck = 'none' | 'crc32' | 'crc64' | 'sha256';

export type CodecSettings =
  | { codec: 'none' }
  /** bzip2 block size in units of 100 kB, from the `BZh1`..`BZh9` header. */
  | { codec: 'bz2'; level: number }
  /**
   * xz: LZMA2 dictionary size in bytes (from the block header's LZMA2 filter properties), whether the
   * x86 BCJ filter precedes LZMA2, and the stream's integrity check.
   */
  | { codec: 'xz'; dictSize: number; x86: boolean; check: XzCheck }
  /** Raw deflate (zip method 8), never sniffed: the container names it. `level`: what re-encoding uses. */
  | { codec: 'deflate'; level: number };

export interface DecodeOptions {
  /** Decompressed-size cap: a larger output is a FormatError `CODEC_OUTPUT_TOO_LARGE` (bomb). */
  maxOutputSize?: number;
  /**
   * The codec the bytes are in, when the container says so (zip's method); default: sniffed from the
   * bytes themselves (a MAR entry is a self-describing stream).
   */
  settings?: CodecSettings;
  /**
   * Compression-ratio cap (decoded bytes per stored byte): an entry whose output would pass
   * max(RATIO_FREE_BYTES, maxRatio × its stored size) is a FormatError `CODEC_RATIO_TOO_HIGH`.
   * xz: checked against the index before decoding; bz2: decoding stops as soon as it is passed.
   * Default DEFAULT_MAX_RATIO; `Infinity` turns it off.
   */
  maxRatio?: number;
  /**
   * Called once with the first decoded bytes — at least PREFIX_CHECK_BYTES of them, or the whole
   * output when it is shorter — before the rest is decoded. Throwing stops decoding with that error
   * (signing uses it to refuse a non-PE after one bzip2 block or one xz window).
   */
  checkPrefix?: (prefix: Uint8Array) => void;
  /** Filled in while decoding (also when it fails): how much work was done before stopping. */
  stats?: DecodeStats;
  /**
   * Told how far a streaming decode is, in stored (input) bytes consumed of the total (see
   * CodecProgress). Not throttled here: the caller decides how often to pass it on.
   */
  onProgress?: CodecProgress;
}

/**
 * Where a codec is in one stream: `done` of `total` units, units being what it streams over — stored
 * bytes consumed (decode) or uncompressed bytes consumed (encode). Called between windows, blocks or
 * chunks, never per byte; a one-shot codec (whole-stream bzip2 via WASM) calls it only when done, if at all.
 */
export type CodecProgress = (done: number, total: number) => void;

export interface DecodeStats {
  /**
   * Bytes the decoders wrote, summed over every attempt (a retried, larger buffer counts again);
   * what a bomb cost before it was refused.
   */
  decodedBytes: number;
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

/**
 * Default compression-ratio cap (decoded / stored bytes). Worst real ratios measured
 * (docs/BENCHMARKS.md "Codec bombs"): 20.5 (bzip2 -9) and 21.1 (xz --x86 --lzma2) over the 99 PEs of
 * the corpus, 384 for a small patch file of the peer Firefox partial MAR; 1000 is ~50× the worst PE.
 */
export const DEFAULT_MAX_RATIO = 1000;

/** Outputs up to this size are never refused for their ratio (tiny, very regular files are legitimate). */
export const RATIO_FREE_BYTES = 16 * 1024 * 1024;

/** How many decoded bytes `checkPrefix` sees at least (a PE's MZ header + e_lfanew + PE signature). */
export const PREFIX_CHECK_BYTES = 64 * 1024;
