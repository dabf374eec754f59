/**
 * The container seam (docs/ARCHITECTURE.md "Containers"): what the signing pipeline needs from an archive
 * format. A format reads a container's structure (entries with the offsets of their stored bytes and the
 * codec those bytes are in), writes an output with the same order and metadata in which chosen entries
 * carry new stored bytes, predicts that output's layout when every entry's size is known, and applies
 * the container's own signature, if it has one. MAR is the first implementation (`mar.ts`), zip the second.
 * Adding a format = one module implementing `ArchiveFormat` and one line in `registry.ts`.
 */
import type { CodecSettings, DecodedFacts } from '../codecs/types.js';
import type { ByteSource } from '../io/byte-source.js';
import type { Confinement } from '../io/confine.js';
import type { SigningKey } from '../keys/types.js';

export type ContainerName = 'mar' | 'zip';

/** One entry as the pipeline sees it, in the container's order. */
export interface ArchiveEntry {
  /** Position in the container's order (0-based). */
  readonly index: number;
  /** The entry's path inside the container (`/`-separated, checked safe by the reader). */
  readonly name: string;
  /** Where its stored (compressed) bytes are in the container file. */
  readonly offset: number;
  readonly size: number;
  /** MAR: the entry's permission flags (recorded in manifests). */
  readonly flags?: number;
}

/** An entry's bytes in the output: its stored bytes, plus what they decode to when they were re-encoded. */
export interface EntryData {
  bytes: Uint8Array;
  /** Absent: the entry's original stored bytes, unchanged. Present: re-encoded (signed) bytes. */
  decoded?: DecodedFacts;
}

/** The container-level signature of an output (MAR signatures; zip has none). */
export interface ContainerSigning {
  mar?: { keys: readonly SigningKey[]; algorithm: 'sha384' | 'sha1' };
}

/**
 * The layout of an output when every entry's stored size is known before writing: where each entry's
 * bytes go and every other byte of the file (headers, index, directory) with the container signature's
 * slots zero. The pipeline assembles a warm output in memory from this, so a finished output is never
 * read back.
 */
export interface PredictedLayout {
  readonly fileSize: number;
  /** Where each entry's stored bytes go, by entry index. */
  readonly slots: readonly { offset: number; size: number }[];
  /** Every byte that is not entry data, at its offset (signature slots zero). */
  readonly segments: readonly { offset: number; bytes: Uint8Array }[];
}

/** What a writer reports when its structure is complete (before the container signature). */
export interface SealedArchive {
  fileSize: number;
}

/**
 * Writes one output: entries in the input's order, then the container's trailing structure, then its
 * signature; to a temp file beside the output, renamed into place by `commit` (`abort` removes it).
 */
export interface ArchiveWriter {
  readonly tempPath: string;
  /** The next entry (index order), with its original stored bytes or re-encoded ones. */
  add(entry: ArchiveEntry, data: EntryData): Promise<void>;
  /** Write the index / central directory; the entries are complete. */
  seal(): Promise<SealedArchive>;
  /**
   * Apply the container signature (no-op when there is none). `whole`: the sealed file's bytes when the
   * caller holds them (the signatures are then patched into it too; else the signed stream is read back
   * from the temp file); `digest`: the signature's digest over `signedRanges` of `whole`, when the caller
   * took it.
   */
  sign(whole?: Buffer, digest?: Uint8Array): Promise<void>;
  /**
   * After `seal`: the container signature's algorithm and the byte ranges of the sealed file it covers,
   * in order (so the caller holding the file's bytes may take `digest` elsewhere, e.g. on a side thread);
   * undefined when the container is not signed.
   */
  signedRanges?(): { algorithm: string; ranges: { offset: number; length: number }[] } | undefined;
  /** fsync and rename into place. */
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** How an output is written (a plain options object; every field optional). */
export interface CreateWriterOptions {
  /**
   * Create the temp file and rename it only inside these roots, following no link (the queue worker's
   * open-time confinement, src/io/confine.ts). Absent: the path as given (a user's own files).
   */
  confine?: Confinement;
}

/** A container opened for signing: its entries and how to write an output like it. */
export interface OpenedArchive {
  readonly format: ContainerName;
  readonly entries: readonly ArchiveEntry[];
  /**
   * The codec an entry's stored bytes are in: MAR sniffs the bytes, zip reads its method. Throws a
   * FormatError when the codec or its settings cannot be read (the pipeline then fails the entry, or
   * skips it under `onInvalid: skip`).
   */
  codecOf(entry: ArchiveEntry, stored: Uint8Array): CodecSettings;
  /**
   * What the container's headers say an entry decodes to (zip: size and CRC-32), checked against the
   * decoded bytes of a passthrough entry. Absent (MAR): the codec stream carries its own checks.
   */
  declaredFacts?(entry: ArchiveEntry): DecodedFacts | undefined;
  createWriter(
    path: string,
    signing: ContainerSigning,
    options?: CreateWriterOptions,
  ): Promise<ArchiveWriter>;
  /** The output's layout for these stored sizes (by entry index); undefined when it cannot be predicted. */
  predictLayout(sizes: readonly number[], signing: ContainerSigning): PredictedLayout | undefined;
}

export interface ArchiveFormat {
  readonly name: ContainerName;
  /** By content: whether the file's first bytes (up to DETECT_BYTES) are this format's. */
  detect(head: Uint8Array, fileSize: number): boolean;
  /** Read the container's structure (every offset checked against the file size). */
  open(source: ByteSource): Promise<OpenedArchive>;
}

/** How many leading bytes `detect` is given. */
export const DETECT_BYTES = 8;
