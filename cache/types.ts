/**
 * The content-addressed cache of signed, recompressed entries (contract).
 * The store is an interface so a remote tier can be added without touching the pipeline: a store
 * declares the optional capabilities it has as properties (`presence`, `ranged`, `outputs`), each null
 * when absent, and the pipeline takes the plain path where one is null — it never probes a store's class.
 */
import type { DecodedFacts } from '../src/codecs/types.js';

export type { DecodedFacts } from '../src/codecs/types.js';

/**
 * Bump when the entry layout or the meaning of a key changes: old entries become misses.
 * 2: the header records the decoded facts (size, CRC-32) of a signed entry, which zip needs; the
 * Authenticode signature of a PE is also stored, under its own key domain (`signatureKey`).
 */
export const CACHE_FORMAT_VERSION = 2;

/**
 * Layout of a locale-output entry (a whole signed MAR plus its manifest data), and of its key
 * derivation: bump to turn every stored output into a miss.
 * 2: header + meta in `<key>.out`, the payload apart in `<key>.mar` (a hard link to the output when it
 * can be); 1 held the payload inside the `.out`.
 */
export const OUTPUT_FORMAT_VERSION = 2;

/** The parts of the key under which a PE's Authenticode signature is stored (`signatureKey`). */
export interface SignatureKeyParts {
  /** SigningProfile.fingerprint. */
  signerFingerprint: string;
  /** Hex Authenticode image digest of the unsigned PE (the profile's digest algorithm). */
  imageDigest: string;
  /** Length of the PE's bytes that digest covers (any old certificate table stripped). */
  imageLength: number;
}

export interface CacheKeyParts {
  /** SigningProfile.fingerprint (certificate chain and every signing option). */
  signerFingerprint: string;
  /** Stable string of the codec and its settings (see src/codecs settingsKey). */
  codecSettings: string;
  /** Hex sha256 of the entry's raw (compressed) bytes in the input MAR. */
  inputSha256: string;
}

/**
 * What a passthrough entry's integrity check covered (`checkKey`): its stored bytes, the codec they were
 * decoded with, the bounds that applied, and what a container declares they decode to (zip's CRC-32
 * and size). A marker under this key says the bytes decoded whole within those bounds to what was declared.
 */
export interface CheckKeyParts {
  /** Hex sha256 of the entry's stored (compressed) bytes. */
  inputSha256: string;
  /** settingsKey() of the codec the bytes were decoded with. */
  codecSettings: string;
  /** The decode bounds (config `limits`). */
  maxEntrySize: number;
  maxCompressionRatio: number;
  /** The decoded size and CRC-32 the container declares (zip), or null (MAR: the stream checks itself). */
  expect: { size: number; crc32: number } | null;
}

/**
 * Everything that decides a signed locale's output bytes, for the locale-output tier's key
 * (`outputCacheKey`). Two runs whose parts are equal produce the same MAR, so the stored one can be served.
 */
export interface OutputKeyParts {
  /** Hex sha256 of the whole input MAR. */
  inputSha256: string;
  /** SigningProfile.fingerprint: the Authenticode signer (chain, key, digest, every signing option). */
  signerFingerprint: string;
  /** The MAR signing keys in signature order: hex fingerprints (sha256 of each SPKI). Empty: unsigned MAR. */
  marKeys: string[];
  /** MAR signature algorithm ('sha384' / 'sha1'); null when the profile does not MAR-sign. */
  marAlgorithm: string | null;
  /** The compiled policy: include and exclude globs (in order) and the effective onInvalid. */
  policy: { include: readonly string[]; exclude: readonly string[]; onInvalid: 'error' | 'skip' };
  /** The marsign version (package.json): a new release never serves an older one's output. */
  toolVersion: string;
  /**
   * Whether every passthrough entry was decoded and found intact before the output was signed: an
   * output made without that check is never served to a run that wants it.
   */
  verifyPassthrough: boolean;
}

/**
 * Entry kinds in one store: signed entries, PE signatures, whole signed locale outputs, blobs (raw
 * bytes named by their sha256: the pieces of containers moved by the remote client, docs/ARCHITECTURE.md
 * "Transfer"), and check markers (a passthrough entry's stored bytes were decoded and found intact).
 */
export type CacheEntryKind = 'entry' | 'signature' | 'output' | 'blob' | 'check';

export interface CacheStats {
  root: string;
  entries: number;
  bytes: number;
  /** Counters since this store object was created. */
  hits: number;
  misses: number;
  /** Entries found bad (truncated, flipped, wrong HMAC/version) and treated as misses. */
  corrupt: number;
  puts: number;
  /** `entries`/`bytes` split by kind (all kinds share one LRU). */
  byKind?: Record<CacheEntryKind, { entries: number; bytes: number }>;
  /** Locale-output tier counters since this store object was created (misses include corrupt ones). */
  outputs?: { hits: number; misses: number; corrupt: number; puts: number };
}

export interface CacheVerifyReport {
  checked: number;
  ok: number;
  /** Keys of bad entries (removed when `repair` was asked). */
  bad: { key: string; kind?: Exclude<CacheEntryKind, 'entry'>; reason: string }[];
  /**
   * Things in the cache that are neither a regular file nor a directory where one belongs (a symlink, a
   * FIFO, a socket, a device; a directory in place of an entry file; a file in place of a prefix
   * directory), by path and type. Never followed or read; with `repair` each is removed as what it is
   * (a link itself, never its target), and `removed` says whether that worked.
   */
  unsafe: { path: string; type: string; removed?: boolean }[];
  /** Leftover temp/quarantine files of crashed writers removed (only with `repair`). */
  staleTempRemoved?: number;
}

export interface CachePruneResult {
  removed: number;
  freedBytes: number;
  remainingBytes: number;
  /** Leftover temp/quarantine files of crashed writers removed on the way. */
  staleTempRemoved?: number;
}

/** A verified locale output served from the cache. */
export interface OutputHit {
  /** Hex sha256 of the output MAR, verified over the bytes handed to the sink. */
  sha256: string;
  /** Hex sha512 of the output MAR, from the HMAC-authenticated header (bound to the verified sha256). */
  sha512: string;
  size: number;
  /** The manifest data stored with it (authenticated, digest-checked). */
  meta: Uint8Array;
}

/**
 * Where a served output's bytes go (the output's temp file), in order, at their offsets. A chunk may be
 * reused by the store once the returned promise settles. The sink must not make the output visible
 * before `getOutput` resolved with a hit: the bytes are verified only at the end.
 */
export type OutputSink = (chunk: Uint8Array, position: number) => Promise<void>;

/** What the locale-output tier needs from a store, beside the entry operations. */
export interface OutputCacheStore {
  /** Whether an output entry's files are present (stats only, nothing verified): a scheduling hint. */
  hasOutput(key: string): Promise<boolean>;
  /**
   * Stream a stored output to `sink` while verifying it. Undefined: absent or bad (a bad entry is
   * counted and removed, as for entries); the sink may then have received bytes that must be discarded.
   */
  getOutput(key: string, sink: OutputSink): Promise<OutputHit | undefined>;
  /**
   * Store an output atomically. `sha512` may still be in flight (it goes into the header last).
   * `linkFrom`: the committed output file holding exactly `payload`; a store may keep a hard link to it
   * instead of writing the bytes again (`linked` says whether it did).
   */
  putOutput(
    key: string,
    payload: Uint8Array,
    info: { sha256: string; sha512: string | Promise<string>; meta: Uint8Array },
    options?: { linkFrom?: string },
  ): Promise<{ linked: boolean } | void>;
}

/** A verified entry as read from the store. */
export interface CachedEntry {
  payload: Uint8Array;
  /** Hex sha256 of `payload`, checked against the authenticated header while reading. */
  sha256: string;
  /** What the payload decodes to, when it was stored with them (signed entries always are). */
  facts?: DecodedFacts;
}

/** Capability: whether an entry is present and how big, without reading it (scheduling and layout hints). */
export interface EntryPresence {
  /** Whether an entry file is present (nothing verified: `get` still verifies before serving). */
  has(key: string): Promise<boolean>;
  /** The payload length an entry claims (unverified), or undefined if absent. */
  payloadSize(key: string): Promise<number | undefined>;
}

/** Hex sha256 of `bytes`, possibly computed elsewhere (a side thread). */
export type PayloadDigester = (bytes: Uint8Array) => Promise<string>;

/** Capability: read a verified payload straight into the caller's buffer (in-place assembly). */
export interface RangedReads {
  /**
   * A verified hit read into `target` (its length must be the payload's), its sha256 taken by `digest`
   * (default: on this thread). Undefined when absent, bad (counted and removed, as by `get`) or of
   * another length (not counted: the caller falls back to `get`, which counts once). `onRead` runs once
   * the bytes are in `target` and before their digest is checked: a caller may use them speculatively
   * provided nothing becomes visible before this resolves.
   */
  readInto(
    key: string,
    target: Uint8Array,
    digest?: PayloadDigester,
    onRead?: () => void,
  ): Promise<{ sha256: string; facts?: DecodedFacts } | undefined>;
}

/** A held blob opened for reading: its size and its bytes in order, verified against its name as they pass. */
export interface BlobReader {
  readonly size: number;
  /**
   * The blob's bytes in chunks. Throws a CodedError `BLOB_CORRUPT` after the last chunk when they do not
   * hash to the blob's name (the bad file is then removed): a consumer must not use the bytes before the
   * iteration completed.
   */
  chunks(): AsyncIterable<Uint8Array>;
  /**
   * The whole blob read straight into `into` (at least `size` bytes; no intermediate copy), checked like
   * `chunks()`: resolves once every byte is in and hashed to the blob's name, else throws `BLOB_CORRUPT`.
   */
  readInto(into: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** How a blob upload ended: complete (stored under its digest) or not yet (`offset` bytes received). */
export interface BlobReceipt {
  complete: boolean;
  /** Bytes of the blob held now (its size when complete). */
  offset: number;
  /** False when the blob was already held (nothing was written). */
  created: boolean;
}

/**
 * Capability: blobs, raw bytes stored under their own sha256 (no HMAC: the name is the check; every
 * read hashes). Uploads are resumable: an unfinished one keeps what arrived (`uploadOffset`) until it
 * is continued or goes stale (removed by prune/verify like a temp file).
 */
export interface BlobStore {
  /** The size of a held blob (one stat, nothing verified), or undefined. */
  blobSize(sha256: string): Promise<number | undefined>;
  /** Bytes an unfinished upload of this blob holds (0 when there is none). */
  uploadOffset(sha256: string): Promise<number>;
  /** The whole blob, verified; undefined when absent or bad (a bad one is counted and removed). */
  getBlob(sha256: string): Promise<Uint8Array | undefined>;
  /** Open a held blob for streaming (verified as it is read); undefined when absent. */
  openBlob(sha256: string): Promise<BlobReader | undefined>;
  /**
   * Store `bytes` under `sha256` atomically; a UsageError `BLOB_DIGEST_MISMATCH` when they hash
   * otherwise (nothing stored). A blob already held is not written again.
   */
  putBlob(sha256: string, bytes: Uint8Array): Promise<{ created: boolean }>;
  /**
   * Receive (part of) a blob of `size` bytes from `offset`, which must be where its unfinished upload
   * stands (0 restarts it). The bytes are hashed as they are written; when the upload reaches `size`
   * the whole is checked against `sha256` and renamed into place (a mismatch removes it:
   * `BLOB_DIGEST_MISMATCH`). A body that ends early (a cut connection) leaves the bytes received for a
   * later call to continue; its error propagates.
   */
  receiveBlob(
    sha256: string,
    upload: { size: number; offset: number; body: AsyncIterable<Uint8Array> | Iterable<Uint8Array> },
  ): Promise<BlobReceipt>;
}

/**
 * Capability: markers that a passthrough entry's stored bytes were decoded whole and found intact, under
 * their check key (`checkKey`). A marker is an authenticated entry with an empty payload (the HMAC binds
 * it to its key), so one planted in the cache without the secret is a bad entry, never a pass.
 */
export interface CheckMarkers {
  /** Whether a valid marker is stored under `key` (a bad one is counted as corrupt and removed). */
  hasCheck(key: string): Promise<boolean>;
  /** Store the marker for `key` atomically. */
  putCheck(key: string): Promise<void>;
}

export interface CacheStore {
  /** Where the store keeps its data (a directory, a URL): for messages and `cache stats`. */
  readonly location: string;
  /** The verified entry, or undefined on a miss (absent or bad entry; a bad entry is counted). */
  get(key: string): Promise<CachedEntry | undefined>;
  /** Store atomically (temp file in the same directory, fsync, rename). Safe with concurrent writers. */
  put(key: string, payload: Uint8Array, facts?: DecodedFacts): Promise<void>;
  /** A PE's Authenticode signature (certificate table SignedData) under its key (`signatureKey`), verified. */
  getSignature(key: string): Promise<Uint8Array | undefined>;
  putSignature(key: string, der: Uint8Array): Promise<void>;
  stats(): Promise<CacheStats>;
  verify(options?: { repair?: boolean }): Promise<CacheVerifyReport>;
  /** Remove least-recently-used entries until the total is at most maxBytes. */
  prune(maxBytes: number): Promise<CachePruneResult>;
  /** Bad entries this process has met so far (a counter, no scan). */
  readonly corruptSeen: number;
  /** Capabilities: null where the store has none; the pipeline then takes its plain path. */
  readonly presence: EntryPresence | null;
  readonly ranged: RangedReads | null;
  /** The locale-output tier. */
  readonly outputs: OutputCacheStore | null;
  /** Blobs by sha256 (remote transfer). */
  readonly blobs: BlobStore | null;
  /** Passthrough check markers. */
  readonly checks: CheckMarkers | null;
}
