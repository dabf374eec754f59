import {
  createHash,
  createHmac,
  createSecretKey,
  randomBytes,
  timingSafeEqual,
  type Hash,
  type KeyObject,
} from 'node:crypto';
import type { Stats } from 'node:fs';
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  truncate,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CodedError, ConfigError, TransientError, UsageError } from '../src/errors.js';
import { AtomicFile } from '../src/io/atomic.js';
import { assertCacheKey, CACHE_KEY_PATTERN } from './key.js';
import {
  CACHE_FORMAT_VERSION,
  OUTPUT_FORMAT_VERSION,
  type CacheEntryKind,
  type CachePruneResult,
  type CacheStats,
  type CacheStore,
  type CacheVerifyReport,
  type CachedEntry,
  type BlobReader,
  type BlobReceipt,
  type BlobStore,
  type DecodedFacts,
  type EntryPresence,
  type OutputCacheStore,
  type OutputHit,
  type OutputSink,
  type PayloadDigester,
  type RangedReads,
} from './types.js';

/** Largest payload stored or read back (a compressed MAR entry; xul.dll is well under this). */
export const MAX_PAYLOAD_BYTES = 1024 * 1024 * 1024;
/** Shortest accepted HMAC secret (RFC 2104 §3: shorter than the hash output weakens the MAC). */
export const MIN_SECRET_BYTES = 16;
/** A hit refreshes the entry's mtime (the LRU clock) at most this often: atime is unreliable (noatime). */
export const TOUCH_INTERVAL_MS = 60_000;
/** Temp/quarantine files older than this belong to a crashed process and may be removed. */
export const STALE_TEMP_MS = 60 * 60 * 1000;
const VERIFY_CHUNK = 1024 * 1024;
/** Largest manifest data stored with a locale output (a 65536-entry MAR's records fit easily). */
export const MAX_OUTPUT_META_BYTES = 64 * 1024 * 1024;
/**
 * A served output is copied in chunks of this size through a ring of OUTPUT_RING buffers: one chunk is
 * hashed on this thread while the next is read and earlier ones are written by the libuv pool. Small
 * reused buffers also avoid faulting in a fresh payload-sized buffer (~0.5 ms per MB).
 */
export const OUTPUT_CHUNK = 1024 * 1024;
const OUTPUT_RING = 4;
/** File name suffix of locale-output entries (`<key>.out`): both kinds share the prefix directories. */
export const OUTPUT_SUFFIX = '.out';
/** File name suffix of a locale output's payload (`<key>.mar`, beside its `<key>.out`). */
export const PAYLOAD_SUFFIX = '.mar';
/** File name suffix of a PE signature (`<key>.sig`): the entry layout, under the signature key domain. */
export const SIGNATURE_SUFFIX = '.sig';
/** File name suffix of a blob (`<sha256>.blob`): the raw bytes, nothing else (their digest is the name). */
export const BLOB_SUFFIX = '.blob';
/** Largest blob stored or received (one container entry, a skeleton or a recipe). */
export const MAX_BLOB_BYTES = MAX_PAYLOAD_BYTES;
/** Chunk size of blob reads (streamed downloads, verify). */
const BLOB_CHUNK = 1024 * 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export type BlobErrorCode =
  | 'BLOB_BAD_DIGEST'
  | 'BLOB_DIGEST_MISMATCH'
  | 'BLOB_TOO_LARGE'
  | 'BLOB_SIZE_MISMATCH'
  | 'BLOB_UPLOAD_OFFSET'
  | 'BLOB_UPLOAD_BUSY'
  | 'BLOB_CORRUPT';

/*
 * Entry file layout (all integers big-endian), HEADER_SIZE bytes then the payload:
 *   0x00  8  magic "MARSCACH"
 *   0x08  u32 format version (CACHE_FORMAT_VERSION)
 *   0x0C  u32 header size (HEADER_SIZE)
 *   0x10  u64 payload length
 *   0x18 32  the entry's key (raw bytes of the hex file name)
 *   0x38 32  sha256 of the payload
 *   0x58 u32 flags: bit 0 = the decoded facts below are set
 *   0x5C u32 CRC-32 of the decoded payload (DecodedFacts.crc32), else 0
 *   0x60 u64 length of the decoded payload (DecodedFacts.size), else 0
 *   0x68 32  HMAC-SHA256(secret, bytes 0x00..0x68): authenticates key ‖ payload hash and the
 *            header fields with them, so a file moved to another key or edited header fails too
 *   0x88     payload
 */
const MAGIC = Buffer.from('MARSCACH', 'latin1');
const OFF_VERSION = 0x08;
const OFF_HEADER_SIZE = 0x0c;
const OFF_LENGTH = 0x10;
const OFF_KEY = 0x18;
const OFF_SHA = 0x38;
const OFF_FLAGS = 0x58;
const OFF_CRC = 0x5c;
const OFF_DECODED = 0x60;
const OFF_MAC = 0x68;
export const HEADER_SIZE = 0x88;
const FLAG_FACTS = 1;

/*
 * A locale-output entry is a pair of files in the key's prefix directory: `<key>.mar`, the payload (the
 * signed output MAR byte for byte, usually a hard link to the output file itself), and `<key>.out`,
 * OUTPUT_HEADER_SIZE bytes of header (big-endian) then the manifest data (JSON), nothing else:
 *   0x00  8  magic "MARSLOUT"
 *   0x08 u32 format version (OUTPUT_FORMAT_VERSION)
 *   0x0C u32 header size (OUTPUT_HEADER_SIZE)
 *   0x10 u64 payload length
 *   0x18 u32 meta length
 *   0x1C u32 reserved, zero
 *   0x20 32  the entry's key
 *   0x40 32  sha256 of the payload (the output's sha256, verified on every read)
 *   0x60 64  sha512 of the payload (trusted once the HMAC and the sha256 hold: it is bound to them)
 *   0xA0 32  sha256 of the meta
 *   0xC0 32  HMAC-SHA256(secret, bytes 0x00..0xC0)
 *   0xE0     meta; the file ends there
 * The payload is written (linked or copied) before the `.out` is renamed into place, so a `.out` never
 * exists without its payload; a `.mar` without a `.out` is garbage that prune removes once stale.
 */
const OUT_MAGIC = Buffer.from('MARSLOUT', 'latin1');
const OUT_LENGTH = 0x10;
const OUT_META_LENGTH = 0x18;
const OUT_RESERVED = 0x1c;
const OUT_KEY = 0x20;
const OUT_SHA256 = 0x40;
const OUT_SHA512 = 0x60;
const OUT_META_SHA = 0xa0;
const OUT_MAC = 0xc0;
export const OUTPUT_HEADER_SIZE = 0xe0;

/** Why an entry is not served. */
export type CacheEntryProblem =
  | 'not-a-file'
  | 'truncated'
  | 'bad-magic'
  | 'version'
  | 'bad-header'
  | 'too-large'
  | 'size-mismatch'
  | 'key-mismatch'
  | 'hmac'
  | 'payload-sha256'
  | 'payload-sha512'
  | 'meta-sha256'
  | 'payload-missing'
  | 'misplaced';

export interface FsCacheStoreOptions {
  /** Cache root; entries live at `<root>/<key[0..2]>/<key>`. */
  root: string;
  /** Secret for the entry HMAC (at least MIN_SECRET_BYTES). Copied; never logged. */
  hmacSecret: Uint8Array;
  /**
   * Called after an entry was found bad and before it is removed. Tests use it to interleave
   * another process's put at the one moment that matters.
   */
  onBadEntry?: (key: string, problem: CacheEntryProblem) => Promise<void> | void;
}

interface EntryFile {
  key: string;
  kind: CacheEntryKind;
  /** The entry file; for an output, its `<key>.out`. */
  path: string;
  /** An output's `<key>.mar` when present (absent: a bad entry, found so by verify). */
  payloadPath?: string;
  /** Bytes of the entry: for an output, both files. */
  size: number;
  /** The LRU clock: the entry file's (for an output, the `.out`'s; never the shared payload's). */
  mtimeMs: number;
}

interface Scan {
  entries: EntryFile[];
  /** Valid key names in the wrong prefix directory: never found by get, reported by verify. */
  misplaced: EntryFile[];
  /**
   * `.*.tmp` and `.*.bad` files (in-flight writes, or leftovers of a crash), and payloads without
   * their `.out` (a put in flight, or one that died between its two renames).
   */
  temps: { path: string; mtimeMs: number }[];
}

type Check =
  | { ok: true; payload: Uint8Array | undefined; sha256: string; facts: DecodedFacts | undefined }
  | { ok: false; problem: CacheEntryProblem }
  /** readInto only: a sound header for a payload of another length than the target (not corrupt). */
  | { ok: false; problem: 'other-length' };

/** How checkEntry reads the payload: into a fresh buffer, in chunks (verify), or into the caller's. */
type PayloadMode =
  | { kind: 'alloc' }
  | { kind: 'chunked' }
  | {
      kind: 'into';
      target: Uint8Array;
      digest: PayloadDigester | undefined;
      onRead: (() => void) | undefined;
    };
type OutputCheck = { ok: true; hit: OutputHit } | { ok: false; problem: CacheEntryProblem };

/**
 * The content-addressed cache on a local (or shared) filesystem. Safe with many processes on one
 * directory: writers rename complete files into place, readers verify everything they read, and a
 * bad entry is moved aside by inode before it is deleted so a fresh entry written by another process
 * in the meantime survives.
 */
export class FsCacheStore implements CacheStore, OutputCacheStore, EntryPresence, RangedReads, BlobStore {
  readonly root: string;
  /** Every capability of the CacheStore contract: this store is the reference implementation. */
  readonly presence: EntryPresence = this;
  readonly ranged: RangedReads = this;
  readonly outputs: OutputCacheStore = this;
  readonly blobs: BlobStore = this;
  /** Blob uploads in progress in this process, by digest (one writer per unfinished upload). */
  private readonly receiving = new Set<string>();
  private readonly secret: KeyObject;
  private readonly onBadEntry: FsCacheStoreOptions['onBadEntry'];
  private counters = { hits: 0, misses: 0, corrupt: 0, puts: 0 };
  private outputCounters = { hits: 0, misses: 0, corrupt: 0, puts: 0 };
  private blobCounters = { puts: 0 };

  constructor(options: FsCacheStoreOptions) {
    if (typeof options?.root !== 'string' || options.root === '')
      throw new ConfigError(
        'CACHE_BAD_ROOT',
        `options.root must be a non-empty path, got ${typeof options?.root}`,
      );
    const secret: unknown = options.hmacSecret;
    if (!(secret instanceof Uint8Array))
      throw new ConfigError(
        'CACHE_BAD_SECRET',
        `options.hmacSecret must be a Uint8Array, got ${typeof secret}`,
      );
    if (secret.length < MIN_SECRET_BYTES)
      throw new ConfigError(
        'CACHE_SECRET_TOO_SHORT',
        `options.hmacSecret must be at least ${MIN_SECRET_BYTES} bytes, got ${secret.length}`,
      );
    this.root = resolve(options.root);
    this.secret = createSecretKey(Buffer.from(secret));
    this.onBadEntry = options.onBadEntry;
  }

  get location(): string {
    return this.root;
  }

  entryPath(key: string): string {
    assertCacheKey(key);
    return join(this.root, key.slice(0, 2), key);
  }

  /** The header + meta file of the locale output stored under `key` (`<key>.out` beside the entries). */
  outputPath(key: string): string {
    return this.entryPath(key) + OUTPUT_SUFFIX;
  }

  /** The payload file of the locale output stored under `key` (`<key>.mar`, beside its `.out`). */
  payloadPath(key: string): string {
    return this.entryPath(key) + PAYLOAD_SUFFIX;
  }

  /**
   * Whether an entry file is present (one stat, nothing verified): a scheduling hint only; `get`
   * still verifies before serving.
   */
  async has(key: string): Promise<boolean> {
    try {
      const st = await lstat(this.entryPath(key));
      return st.isFile() && st.size >= HEADER_SIZE;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /** The payload length an entry file claims (from its size; unverified), or undefined if absent. */
  async payloadSize(key: string): Promise<number | undefined> {
    try {
      const st = await lstat(this.entryPath(key));
      return st.isFile() && st.size >= HEADER_SIZE ? st.size - HEADER_SIZE : undefined;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  /** A PE signature's file (`<key>.sig`, beside the entries; the same layout as an entry file). */
  signaturePath(key: string): string {
    return this.entryPath(key) + SIGNATURE_SUFFIX;
  }

  /** The verified payload with the sha256 just checked (callers need not rehash) and its decoded facts. */
  async get(key: string): Promise<CachedEntry | undefined> {
    return this.getAt(this.entryPath(key), key);
  }

  async getSignature(key: string): Promise<Uint8Array | undefined> {
    return (await this.getAt(this.signaturePath(key), key))?.payload;
  }

  async putSignature(key: string, der: Uint8Array): Promise<void> {
    return this.putAt(this.signaturePath(key), key, der, undefined);
  }

  private async getAt(path: string, key: string): Promise<CachedEntry | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if (isMissing(e)) {
        this.counters.misses++;
        return undefined;
      }
      throw e;
    }
    try {
      const st = await fh.stat();
      const r = st.isFile() ? await checkEntry(fh, st.size, key, this.secret, { kind: 'alloc' }) : notAFile;
      if (r.ok) {
        this.counters.hits++;
        const now = Date.now();
        if (now - st.mtimeMs > TOUCH_INTERVAL_MS) {
          // The LRU clock for prune. Best effort: a read-only or foreign-owned cache still serves.
          await fh.utimes(now / 1000, now / 1000).catch(() => undefined);
        }
        return r.payload && { payload: r.payload, sha256: r.sha256, ...(r.facts ? { facts: r.facts } : {}) };
      }
      this.counters.corrupt++;
      this.counters.misses++;
      if (r.problem !== 'other-length') await this.onBadEntry?.(key, r.problem);
      // The handle stays open until the bad file is gone, so its inode cannot be reused meanwhile.
      // A failed removal (read-only cache) still leaves a miss: the bad bytes are never served.
      if (st.isFile()) await removeBad(path, st).catch(() => undefined);
      return undefined;
    } finally {
      await fh.close();
    }
  }

  /**
   * A verified hit read straight into `target` (e.g. its place in an output being assembled in
   * memory), the payload's sha256 taken by `digest` (default: on this thread). Undefined when the entry
   * is absent, bad (counted as corrupt and removed, as by `get`), or holds a payload whose length is not
   * `target.length`; absent and other-length entries are not counted, so the caller's fallback `get`
   * counts the miss or hit once. `target`'s contents are unspecified after undefined.
   * `onRead` is called once the payload is in `target` and before its digest is checked: a caller may
   * start using the bytes speculatively, provided nothing becomes visible before this resolves.
   */
  async readInto(
    key: string,
    target: Uint8Array,
    digest?: PayloadDigester,
    onRead?: () => void,
  ): Promise<{ sha256: string; facts?: DecodedFacts } | undefined> {
    const path = this.entryPath(key);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    try {
      const st = await fh.stat();
      const r = st.isFile()
        ? await checkEntry(fh, st.size, key, this.secret, { kind: 'into', target, digest, onRead })
        : notAFile;
      if (r.ok) {
        this.counters.hits++;
        const now = Date.now();
        if (now - st.mtimeMs > TOUCH_INTERVAL_MS)
          await fh.utimes(now / 1000, now / 1000).catch(() => undefined);
        return { sha256: r.sha256, ...(r.facts ? { facts: r.facts } : {}) };
      }
      if (r.problem === 'other-length') return undefined;
      this.counters.corrupt++;
      await this.onBadEntry?.(key, r.problem);
      if (st.isFile()) await removeBad(path, st).catch(() => undefined);
      return undefined;
    } finally {
      await fh.close();
    }
  }

  async put(key: string, payload: Uint8Array, facts?: DecodedFacts): Promise<void> {
    return this.putAt(this.entryPath(key), key, payload, facts);
  }

  private async putAt(
    path: string,
    key: string,
    payload: Uint8Array,
    facts: DecodedFacts | undefined,
  ): Promise<void> {
    if (!(payload instanceof Uint8Array))
      throw new CodedError('CACHE_BAD_PAYLOAD', `payload must be a Uint8Array, got ${typeof payload}`);
    if (payload.length > MAX_PAYLOAD_BYTES)
      throw new CodedError(
        'CACHE_PAYLOAD_TOO_LARGE',
        `payload is ${payload.length} bytes, more than the ${MAX_PAYLOAD_BYTES} a cache entry may hold`,
      );
    if (facts !== undefined && !validFacts(facts))
      throw new CodedError('CACHE_BAD_PAYLOAD', 'facts must hold a u64 size and a u32 crc32');
    await mkdir(dirname(path), { recursive: true });
    const header = buildHeader(key, payload, this.secret, facts);
    const f = await AtomicFile.create(path, 0o644);
    try {
      await f.write(header);
      await f.write(payload);
      await f.commit();
    } catch (e) {
      await f.abort();
      throw e;
    }
    this.counters.puts++;
  }

  /** Whether both files of an output entry are present (two stats, nothing verified). */
  async hasOutput(key: string): Promise<boolean> {
    try {
      const [out, payload] = await Promise.all([lstat(this.outputPath(key)), lstat(this.payloadPath(key))]);
      return out.isFile() && out.size >= OUTPUT_HEADER_SIZE && payload.isFile();
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /**
   * Stream the locale output stored under `key` to `sink`, verifying header, HMAC, meta digest, the
   * payload file's size and the payload's sha256 on the way (the bytes hashed are the bytes handed
   * over). A bad entry (either file) is a miss, counted as corrupt, and both files are removed like a bad
   * signed entry; errors of the sink propagate. A hit refreshes the `.out`'s mtime only: the payload may
   * be the user's output file (a hard link), whose times are not ours to change.
   */
  async getOutput(key: string, sink: OutputSink): Promise<OutputHit | undefined> {
    const path = this.outputPath(key);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if (isMissing(e)) {
        this.outputCounters.misses++;
        return undefined;
      }
      throw e;
    }
    const opened: OpenedPayload = {};
    try {
      const st = await fh.stat();
      const r: OutputCheck = st.isFile()
        ? await checkOutput(fh, st.size, key, this.secret, this.payloadPath(key), sink, opened)
        : { ok: false, problem: 'not-a-file' };
      if (r.ok) {
        this.outputCounters.hits++;
        const now = Date.now();
        if (now - st.mtimeMs > TOUCH_INTERVAL_MS)
          await fh.utimes(now / 1000, now / 1000).catch(() => undefined);
        return r.hit;
      }
      this.outputCounters.corrupt++;
      this.outputCounters.misses++;
      this.counters.corrupt++;
      await this.onBadEntry?.(key, r.problem);
      // Both handles stay open until the bad files are gone (their inodes cannot be reused meanwhile).
      await removeBadOutput(path, st, this.payloadPath(key), opened.st).catch(() => undefined);
      return undefined;
    } finally {
      await opened.fh?.close();
      await fh.close();
    }
  }

  /**
   * Store an output: first its payload `<key>.mar`, then `<key>.out` (header + meta; temp, fsync,
   * rename), so a `.out` is never visible without its payload. With `linkFrom` (the output file just
   * committed, data fsynced, holding `payload`) the payload is a hard link to it, renamed into place;
   * when the link cannot be made (another filesystem, a filesystem without hard links, permissions) or
   * the file linked is not `payload.length` bytes, the payload is written as a copy (temp, fsync,
   * rename). Whether it was linked is returned. The `.out`'s directory fsync also covers the payload's
   * rename. A linked file that does not hold `payload` (replaced or edited meanwhile) fails the sha256
   * check of the first read: a miss, never wrong bytes.
   */
  async putOutput(
    key: string,
    payload: Uint8Array,
    info: { sha256: string; sha512: string | Promise<string>; meta: Uint8Array },
    options: { linkFrom?: string } = {},
  ): Promise<{ linked: boolean }> {
    const path = this.outputPath(key);
    const payloadPath = this.payloadPath(key);
    if (!(payload instanceof Uint8Array) || !(info?.meta instanceof Uint8Array))
      throw new CodedError('CACHE_BAD_PAYLOAD', 'payload and meta must be Uint8Arrays');
    if (payload.length > MAX_PAYLOAD_BYTES || info.meta.length > MAX_OUTPUT_META_BYTES)
      throw new CodedError(
        'CACHE_PAYLOAD_TOO_LARGE',
        `output ${payload.length} bytes / meta ${info.meta.length} bytes exceed ${MAX_PAYLOAD_BYTES} / ${MAX_OUTPUT_META_BYTES}`,
      );
    if (!/^[0-9a-f]{64}$/.test(info.sha256))
      throw new CodedError('CACHE_BAD_PAYLOAD', 'sha256 must be 64 lowercase hex digits');
    await mkdir(dirname(path), { recursive: true });
    let placed =
      typeof options.linkFrom === 'string'
        ? await linkInto(options.linkFrom, payloadPath, payload.length)
        : undefined;
    const linked = placed !== undefined;
    if (!placed) {
      const p = await AtomicFile.create(payloadPath, 0o644);
      try {
        await p.write(payload, 0);
        placed = await p.handle.stat();
        await p.commit();
      } catch (e) {
        await p.abort();
        throw e;
      }
    }
    const f = await AtomicFile.create(path, 0o644);
    try {
      // Meta first: the header (with the sha512, which may still be being computed on another thread,
      // and the HMAC over it) is written last, before the fsync and rename.
      await f.write(info.meta, OUTPUT_HEADER_SIZE);
      const sha512 = await info.sha512;
      if (!/^[0-9a-f]{128}$/.test(sha512))
        throw new CodedError('CACHE_BAD_PAYLOAD', 'sha512 must be 128 lowercase hex digits');
      const h = Buffer.alloc(OUTPUT_HEADER_SIZE);
      OUT_MAGIC.copy(h, 0);
      h.writeUInt32BE(OUTPUT_FORMAT_VERSION, OFF_VERSION);
      h.writeUInt32BE(OUTPUT_HEADER_SIZE, OFF_HEADER_SIZE);
      h.writeBigUInt64BE(BigInt(payload.length), OUT_LENGTH);
      h.writeUInt32BE(info.meta.length, OUT_META_LENGTH);
      h.write(key, OUT_KEY, 'hex');
      h.write(info.sha256, OUT_SHA256, 'hex');
      h.write(sha512, OUT_SHA512, 'hex');
      createHash('sha256').update(info.meta).digest().copy(h, OUT_META_SHA);
      outputMac(this.secret, h).copy(h, OUT_MAC);
      await f.write(h, 0);
      await f.commit();
    } catch (e) {
      await f.abort();
      // The payload just placed is garbage without its `.out` (prune would remove it once stale); remove
      // it now unless another writer's payload replaced it meanwhile.
      await removeBad(payloadPath, placed).catch(() => undefined);
      throw e;
    }
    this.outputCounters.puts++;
    return { linked };
  }

  /** A blob's file (`<root>/<sha[0..2]>/<sha>.blob`). */
  blobPath(sha256: string): string {
    assertBlobDigest(sha256);
    return join(this.root, sha256.slice(0, 2), sha256 + BLOB_SUFFIX);
  }

  /** An unfinished upload of a blob: a temp name, so prune/verify remove it once stale. */
  uploadPath(sha256: string): string {
    assertBlobDigest(sha256);
    return join(this.root, sha256.slice(0, 2), `.${sha256}${BLOB_SUFFIX}.upload.tmp`);
  }

  async blobSize(sha256: string): Promise<number | undefined> {
    return (await regularFileSize(this.blobPath(sha256))) ?? undefined;
  }

  async uploadOffset(sha256: string): Promise<number> {
    return (await regularFileSize(this.uploadPath(sha256))) ?? 0;
  }

  async getBlob(sha256: string): Promise<Uint8Array | undefined> {
    const reader = await this.openBlob(sha256);
    if (!reader) return undefined;
    try {
      const out = new Uint8Array(Buffer.allocUnsafeSlow(reader.size).buffer, 0, reader.size);
      let at = 0;
      for await (const chunk of reader.chunks()) {
        out.set(chunk, at);
        at += chunk.length;
      }
      return out;
    } catch (e) {
      if ((e as CodedError).code === 'BLOB_CORRUPT') return undefined;
      throw e;
    } finally {
      await reader.close();
    }
  }

  async openBlob(sha256: string): Promise<BlobReader | undefined> {
    const path = this.blobPath(sha256);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_BLOB_BYTES) {
      this.counters.corrupt++;
      await fh.close();
      if (st.isFile()) await removeBad(path, st).catch(() => undefined);
      return undefined;
    }
    const now = Date.now();
    if (now - st.mtimeMs > TOUCH_INTERVAL_MS) await fh.utimes(now / 1000, now / 1000).catch(() => undefined);
    const size = st.size;
    const onBad = async (): Promise<void> => {
      this.counters.corrupt++;
      await this.onBadEntry?.(sha256, 'payload-sha256');
      await removeBad(path, st).catch(() => undefined);
    };
    let closed = false;
    return {
      size,
      async *chunks() {
        const hash = createHash('sha256');
        const buf = Buffer.allocUnsafe(Math.max(1, Math.min(BLOB_CHUNK, size)));
        for (let at = 0; at < size;) {
          const want = Math.min(buf.length, size - at);
          const got = await readFully(fh, buf.subarray(0, want), at);
          if (got < want) break;
          hash.update(buf.subarray(0, want));
          // A copy: the consumer may keep the chunk while the next one is read into `buf`.
          yield Buffer.from(buf.subarray(0, want));
          at += want;
          if (at === size) {
            if (hash.digest('hex') !== sha256) {
              await onBad();
              throw new CodedError(
                'BLOB_CORRUPT' satisfies BlobErrorCode,
                `blob ${sha256} does not hash to its name`,
              );
            }
            return;
          }
        }
        if (size === 0 && hash.digest('hex') === sha256) return;
        await onBad();
        throw new CodedError(
          'BLOB_CORRUPT' satisfies BlobErrorCode,
          `blob ${sha256} is truncated or does not hash to its name`,
        );
      },
      async close() {
        if (closed) return;
        closed = true;
        await fh.close();
      },
    };
  }

  async putBlob(sha256: string, bytes: Uint8Array): Promise<{ created: boolean }> {
    const path = this.blobPath(sha256);
    if (!(bytes instanceof Uint8Array))
      throw new CodedError('CACHE_BAD_PAYLOAD', `blob bytes must be a Uint8Array, got ${typeof bytes}`);
    if (bytes.length > MAX_BLOB_BYTES)
      throw new UsageError(
        'BLOB_TOO_LARGE' satisfies BlobErrorCode,
        `blob ${sha256} is ${bytes.length} bytes, more than the ${MAX_BLOB_BYTES} a blob may hold`,
      );
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== sha256)
      throw new UsageError(
        'BLOB_DIGEST_MISMATCH' satisfies BlobErrorCode,
        `the bytes given as blob ${sha256} hash to ${actual}`,
      );
    if ((await regularFileSize(path)) === bytes.length) return { created: false };
    await mkdir(dirname(path), { recursive: true });
    const f = await AtomicFile.create(path, 0o644);
    try {
      await f.write(bytes);
      await f.commit();
    } catch (e) {
      await f.abort();
      throw e;
    }
    this.blobCounters.puts++;
    return { created: true };
  }

  async receiveBlob(
    sha256: string,
    upload: { size: number; offset: number; body: AsyncIterable<Uint8Array> | Iterable<Uint8Array> },
  ): Promise<BlobReceipt> {
    const path = this.blobPath(sha256);
    const { size, offset } = upload;
    if (
      !Number.isSafeInteger(size) ||
      size < 0 ||
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      offset > size
    )
      throw new UsageError(
        'BLOB_SIZE_MISMATCH' satisfies BlobErrorCode,
        `blob ${sha256}: offset ${offset} and size ${size} must be integers with 0 ≤ offset ≤ size`,
      );
    if (size > MAX_BLOB_BYTES)
      throw new UsageError(
        'BLOB_TOO_LARGE' satisfies BlobErrorCode,
        `blob ${sha256} is ${size} bytes, more than the ${MAX_BLOB_BYTES} a blob may hold`,
      );
    const held = await regularFileSize(path);
    if (held !== undefined) return { complete: true, offset: held, created: false };
    if (this.receiving.has(sha256))
      throw new TransientError(
        'BLOB_UPLOAD_BUSY' satisfies BlobErrorCode,
        `blob ${sha256} is being uploaded by another request; retry`,
      );
    this.receiving.add(sha256);
    try {
      return await this.receiveInto(sha256, path, size, offset, upload.body);
    } finally {
      this.receiving.delete(sha256);
    }
  }

  private async receiveInto(
    sha256: string,
    path: string,
    size: number,
    offset: number,
    body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<BlobReceipt> {
    const partial = this.uploadPath(sha256);
    const have = (await regularFileSize(partial)) ?? 0;
    if (offset !== have && offset !== 0)
      throw new UsageError(
        'BLOB_UPLOAD_OFFSET' satisfies BlobErrorCode,
        `blob ${sha256}: the upload stands at ${have} bytes, not ${offset}`,
        { details: { offset: have } },
      );
    await mkdir(dirname(partial), { recursive: true });
    if (offset === 0 && have > 0) await truncate(partial, 0);
    const fh = await open(partial, offset === 0 ? 'w' : 'r+', 0o644);
    let closed = false;
    const close = async (): Promise<void> => {
      if (!closed) {
        closed = true;
        await fh.close();
      }
    };
    try {
      const hash = createHash('sha256');
      // A resumed upload: what arrived before is hashed again (the hash state cannot be kept).
      if (offset > 0) {
        const buf = Buffer.allocUnsafe(Math.min(BLOB_CHUNK, offset));
        for (let at = 0; at < offset;) {
          const want = Math.min(buf.length, offset - at);
          if ((await readFully(fh, buf.subarray(0, want), at)) < want)
            throw new UsageError(
              'BLOB_UPLOAD_OFFSET' satisfies BlobErrorCode,
              `blob ${sha256}: the upload shrank`,
            );
          hash.update(buf.subarray(0, want));
          at += want;
        }
      }
      let at = offset;
      for await (const chunk of body) {
        if (at + chunk.length > size) {
          await close();
          await unlinkIfPresent(partial);
          throw new UsageError(
            'BLOB_SIZE_MISMATCH' satisfies BlobErrorCode,
            `blob ${sha256}: more than the declared ${size} bytes were sent`,
          );
        }
        hash.update(chunk);
        let done = 0;
        while (done < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, at + done);
          done += bytesWritten;
        }
        at += chunk.length;
      }
      if (at < size) return { complete: false, offset: at, created: false };
      const actual = hash.digest('hex');
      if (actual !== sha256) {
        await close();
        await unlinkIfPresent(partial);
        throw new UsageError(
          'BLOB_DIGEST_MISMATCH' satisfies BlobErrorCode,
          `the ${size} bytes uploaded as blob ${sha256} hash to ${actual}; nothing was stored`,
        );
      }
      await fh.sync();
      await close();
      await rename(partial, path);
      this.blobCounters.puts++;
      return { complete: true, offset: size, created: true };
    } finally {
      await close();
    }
  }

  /** Corrupt entries this process met (stats().corrupt without scanning the cache directory). */
  get corruptSeen(): number {
    return this.counters.corrupt;
  }

  async stats(): Promise<CacheStats> {
    const scan = await scanRoot(this.root);
    let bytes = 0;
    const byKind = {
      entry: { entries: 0, bytes: 0 },
      signature: { entries: 0, bytes: 0 },
      output: { entries: 0, bytes: 0 },
      blob: { entries: 0, bytes: 0 },
    };
    for (const e of scan.entries) {
      bytes += e.size;
      byKind[e.kind].entries++;
      byKind[e.kind].bytes += e.size;
    }
    return {
      root: this.root,
      entries: scan.entries.length,
      bytes,
      ...this.counters,
      byKind,
      outputs: { ...this.outputCounters },
    };
  }

  async verify(options: { repair?: boolean } = {}): Promise<CacheVerifyReport> {
    const repair = options.repair === true;
    const scan = await scanRoot(this.root);
    const report: CacheVerifyReport = { checked: 0, ok: 0, bad: [] };
    for (const e of scan.entries) {
      let fh: FileHandle;
      try {
        fh = await open(e.path, 'r');
      } catch (err) {
        if (isMissing(err)) continue; // pruned or replaced-and-removed by another process meanwhile
        throw err;
      }
      const opened: OpenedPayload = {};
      try {
        const st = await fh.stat();
        const r = !st.isFile()
          ? notAFile
          : e.kind === 'output'
            ? await checkOutput(fh, st.size, e.key, this.secret, this.payloadPath(e.key), undefined, opened)
            : e.kind === 'blob'
              ? await checkBlob(fh, st.size, e.key)
              : await checkEntry(fh, st.size, e.key, this.secret, { kind: 'chunked' });
        report.checked++;
        if (r.ok) report.ok++;
        else {
          report.bad.push({
            key: e.key,
            ...(e.kind !== 'entry' ? { kind: e.kind } : {}),
            reason: r.problem,
          });
          if (repair && e.kind === 'output')
            await removeBadOutput(e.path, st, this.payloadPath(e.key), opened.st);
          else if (repair && st.isFile()) await removeBad(e.path, st);
        }
      } finally {
        await opened.fh?.close();
        await fh.close();
      }
    }
    for (const e of scan.misplaced) {
      report.checked++;
      report.bad.push({
        key: e.key,
        ...(e.kind !== 'entry' ? { kind: e.kind } : {}),
        reason: 'misplaced',
      });
      if (repair) {
        await unlinkIfPresent(e.path);
        if (e.payloadPath) await unlinkIfPresent(e.payloadPath);
      }
    }
    if (repair) report.staleTempRemoved = await removeStaleTemps(scan);
    return report;
  }

  async prune(maxBytes: number): Promise<CachePruneResult> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0)
      throw new CodedError('CACHE_BAD_MAX_SIZE', `maxBytes must be a non-negative integer, got ${maxBytes}`);
    const scan = await scanRoot(this.root);
    const staleTempRemoved = await removeStaleTemps(scan);
    let remaining = 0;
    for (const e of scan.entries) remaining += e.size;
    // Least recently used first: mtime is the write time, refreshed by hits (TOUCH_INTERVAL_MS).
    const order = [...scan.entries].sort((a, b) => a.mtimeMs - b.mtimeMs || (a.key < b.key ? -1 : 1));
    let removed = 0;
    let freedBytes = 0;
    for (const e of order) {
      if (remaining <= maxBytes) break;
      // A concurrent writer may have just replaced this entry; losing it costs one miss, no more. An
      // output's `.out` goes first, so no reader finds a `.out` whose payload was just removed.
      if (await unlinkIfPresent(e.path)) {
        removed++;
        freedBytes += e.size;
      }
      if (e.payloadPath) await unlinkIfPresent(e.payloadPath);
      remaining -= e.size;
    }
    return { removed, freedBytes, remainingBytes: remaining, staleTempRemoved };
  }
}

const notAFile: Check = { ok: false, problem: 'not-a-file' };

function buildHeader(
  key: string,
  payload: Uint8Array,
  secret: KeyObject,
  facts: DecodedFacts | undefined,
): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(h, 0);
  h.writeUInt32BE(CACHE_FORMAT_VERSION, OFF_VERSION);
  h.writeUInt32BE(HEADER_SIZE, OFF_HEADER_SIZE);
  h.writeBigUInt64BE(BigInt(payload.length), OFF_LENGTH);
  h.write(key, OFF_KEY, 'hex');
  createHash('sha256').update(payload).digest().copy(h, OFF_SHA);
  if (facts) {
    h.writeUInt32BE(FLAG_FACTS, OFF_FLAGS);
    h.writeUInt32BE(facts.crc32, OFF_CRC);
    h.writeBigUInt64BE(BigInt(facts.size), OFF_DECODED);
  }
  mac(secret, h).copy(h, OFF_MAC);
  return h;
}

function validFacts(f: DecodedFacts): boolean {
  return (
    typeof f === 'object' &&
    f !== null &&
    Number.isSafeInteger(f.size) &&
    f.size >= 0 &&
    Number.isInteger(f.crc32) &&
    f.crc32 >= 0 &&
    f.crc32 <= 0xffffffff
  );
}

/** The decoded facts of a header whose HMAC held (undefined when the flag is clear). */
function headerFacts(h: Buffer): DecodedFacts | undefined | 'bad' {
  const flags = h.readUInt32BE(OFF_FLAGS);
  if (flags === 0)
    return h.readUInt32BE(OFF_CRC) === 0 && h.readBigUInt64BE(OFF_DECODED) === 0n ? undefined : 'bad';
  if (flags !== FLAG_FACTS) return 'bad';
  const size = h.readBigUInt64BE(OFF_DECODED);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) return 'bad';
  return { size: Number(size), crc32: h.readUInt32BE(OFF_CRC) };
}

function mac(secret: KeyObject, header: Buffer): Buffer {
  return createHmac('sha256', secret).update(header.subarray(0, OFF_MAC)).digest();
}

function outputMac(secret: KeyObject, header: Buffer): Buffer {
  return createHmac('sha256', secret).update(header.subarray(0, OUT_MAC)).digest();
}

/** The payload file checkOutput opened: the caller closes it (after removing a bad entry). */
interface OpenedPayload {
  fh?: FileHandle;
  st?: Stats;
}

/**
 * Check an output entry completely: the open `.out`'s header, HMAC and meta digest, then the payload
 * file at `payloadPath` (opened into `opened`): its size, and its sha256 while each chunk is handed to
 * `sink` (none: `verify`, which also checks the stored sha512).
 */
async function checkOutput(
  fh: FileHandle,
  fileSize: number,
  key: string,
  secret: KeyObject,
  payloadPath: string,
  sink: OutputSink | undefined,
  opened: OpenedPayload,
): Promise<OutputCheck> {
  if (fileSize < OUTPUT_HEADER_SIZE) return { ok: false, problem: 'truncated' };
  const h = Buffer.alloc(OUTPUT_HEADER_SIZE);
  if ((await readFully(fh, h, 0)) < OUTPUT_HEADER_SIZE) return { ok: false, problem: 'truncated' };
  if (!h.subarray(0, OUT_MAGIC.length).equals(OUT_MAGIC)) return { ok: false, problem: 'bad-magic' };
  if (h.readUInt32BE(OFF_VERSION) !== OUTPUT_FORMAT_VERSION) return { ok: false, problem: 'version' };
  if (h.readUInt32BE(OFF_HEADER_SIZE) !== OUTPUT_HEADER_SIZE || h.readUInt32BE(OUT_RESERVED) !== 0)
    return { ok: false, problem: 'bad-header' };
  const length = h.readBigUInt64BE(OUT_LENGTH);
  const metaLen = h.readUInt32BE(OUT_META_LENGTH);
  if (length > BigInt(MAX_PAYLOAD_BYTES) || metaLen > MAX_OUTPUT_META_BYTES)
    return { ok: false, problem: 'too-large' };
  const len = Number(length);
  const total = OUTPUT_HEADER_SIZE + metaLen;
  if (total > fileSize) return { ok: false, problem: 'truncated' };
  if (total < fileSize) return { ok: false, problem: 'size-mismatch' };
  if (h.toString('hex', OUT_KEY, OUT_KEY + 32) !== key) return { ok: false, problem: 'key-mismatch' };
  if (!timingSafeEqual(outputMac(secret, h), h.subarray(OUT_MAC, OUT_MAC + 32)))
    return { ok: false, problem: 'hmac' };
  const meta = new Uint8Array(metaLen);
  if ((await readFully(fh, meta, OUTPUT_HEADER_SIZE)) < metaLen) return { ok: false, problem: 'truncated' };
  if (
    !timingSafeEqual(createHash('sha256').update(meta).digest(), h.subarray(OUT_META_SHA, OUT_META_SHA + 32))
  )
    return { ok: false, problem: 'meta-sha256' };

  try {
    opened.fh = await open(payloadPath, 'r');
  } catch (e) {
    if (isMissing(e)) return { ok: false, problem: 'payload-missing' };
    throw e;
  }
  const pst = (opened.st = await opened.fh.stat());
  if (!pst.isFile()) return { ok: false, problem: 'not-a-file' };
  if (pst.size < len) return { ok: false, problem: 'truncated' };
  if (pst.size > len) return { ok: false, problem: 'size-mismatch' };
  const sha512 = sink ? undefined : createHash('sha512');
  const streamed = await streamPayload(opened.fh, 0, len, sink, sha512);
  if (!streamed) return { ok: false, problem: 'truncated' };
  if (!timingSafeEqual(streamed, h.subarray(OUT_SHA256, OUT_SHA256 + 32)))
    return { ok: false, problem: 'payload-sha256' };
  if (sha512 && !timingSafeEqual(sha512.digest(), h.subarray(OUT_SHA512, OUT_SHA512 + 64)))
    return { ok: false, problem: 'payload-sha512' };
  return {
    ok: true,
    hit: {
      sha256: streamed.toString('hex'),
      sha512: h.toString('hex', OUT_SHA512, OUT_SHA512 + 64),
      size: len,
      meta,
    },
  };
}

/**
 * sha256 of `len` bytes at `start`, read in OUTPUT_CHUNK pieces through a ring of buffers: while one
 * chunk is hashed here, the next is being read and the previous ones written to `sink` by the libuv
 * pool. Undefined when the file ends early. Every read and write has settled when this returns.
 */
async function streamPayload(
  fh: FileHandle,
  start: number,
  len: number,
  sink: OutputSink | undefined,
  also?: Hash,
): Promise<Buffer | undefined> {
  const hash = createHash('sha256');
  const size = Math.max(1, Math.min(OUTPUT_CHUNK, len));
  const chunks = Math.ceil(len / size);
  const ring: Buffer[] = [];
  const writes: (Promise<void> | undefined)[] = [];
  const readChunk = async (i: number): Promise<Buffer | undefined> => {
    const b = (ring[i % OUTPUT_RING] ??= Buffer.allocUnsafeSlow(size));
    const n = Math.min(size, len - i * size);
    const view = b.subarray(0, n);
    return (await readFully(fh, view, start + i * size)) < n ? undefined : view;
  };
  let pending: Promise<Buffer | undefined> | undefined = chunks > 0 ? readChunk(0) : undefined;
  pending?.catch(() => undefined);
  try {
    for (let i = 0; i < chunks; i++) {
      const chunk = await pending!;
      pending = undefined;
      if (!chunk) return undefined;
      if (i + 1 < chunks) {
        // The next read reuses the buffer of chunk i+1-OUTPUT_RING: its write must be done.
        await writes[(i + 1) % OUTPUT_RING];
        pending = readChunk(i + 1);
        pending.catch(() => undefined);
      }
      hash.update(chunk);
      also?.update(chunk);
      if (sink) {
        const w = sink(chunk, i * size);
        w.catch(() => undefined); // awaited below (or before its buffer is reused)
        writes[i % OUTPUT_RING] = w;
      }
    }
    await Promise.all(writes);
    return hash.digest();
  } finally {
    await Promise.allSettled([pending, ...writes]);
  }
}

/**
 * Check an open entry file completely. With `wantPayload` the payload is returned in its own
 * ArrayBuffer (not Node's shared pool) so it can be transferred to or from a worker thread;
 * without, it is hashed in chunks (verify of big entries without holding them).
 */
async function checkEntry(
  fh: FileHandle,
  fileSize: number,
  key: string,
  secret: KeyObject,
  mode: PayloadMode,
): Promise<Check> {
  if (fileSize < HEADER_SIZE) return { ok: false, problem: 'truncated' };
  const h = Buffer.alloc(HEADER_SIZE);
  if ((await readFully(fh, h, 0)) < HEADER_SIZE) return { ok: false, problem: 'truncated' };
  if (!h.subarray(0, MAGIC.length).equals(MAGIC)) return { ok: false, problem: 'bad-magic' };
  if (h.readUInt32BE(OFF_VERSION) !== CACHE_FORMAT_VERSION) return { ok: false, problem: 'version' };
  if (h.readUInt32BE(OFF_HEADER_SIZE) !== HEADER_SIZE) return { ok: false, problem: 'bad-header' };
  const length = h.readBigUInt64BE(OFF_LENGTH);
  if (length > BigInt(MAX_PAYLOAD_BYTES)) return { ok: false, problem: 'too-large' };
  const len = Number(length);
  if (HEADER_SIZE + len > fileSize) return { ok: false, problem: 'truncated' };
  if (HEADER_SIZE + len < fileSize) return { ok: false, problem: 'size-mismatch' };
  if (h.toString('hex', OFF_KEY, OFF_KEY + 32) !== key) return { ok: false, problem: 'key-mismatch' };
  if (!timingSafeEqual(mac(secret, h), h.subarray(OFF_MAC, OFF_MAC + 32)))
    return { ok: false, problem: 'hmac' };
  const facts = headerFacts(h);
  if (facts === 'bad') return { ok: false, problem: 'bad-header' };

  let digest: Buffer;
  let payload: Uint8Array | undefined;
  if (mode.kind === 'into') {
    if (mode.target.length !== len) return { ok: false, problem: 'other-length' };
    if ((await readFully(fh, mode.target, HEADER_SIZE)) < len) return { ok: false, problem: 'truncated' };
    mode.onRead?.();
    digest = mode.digest
      ? Buffer.from(await mode.digest(mode.target), 'hex')
      : createHash('sha256').update(mode.target).digest();
    if (digest.length !== 32) return { ok: false, problem: 'payload-sha256' };
  } else if (mode.kind === 'alloc') {
    payload = new Uint8Array(Buffer.allocUnsafeSlow(len).buffer, 0, len);
    if ((await readFully(fh, payload, HEADER_SIZE)) < len) return { ok: false, problem: 'truncated' };
    digest = createHash('sha256').update(payload).digest();
  } else {
    const hash = createHash('sha256');
    const chunk = Buffer.allocUnsafe(Math.min(VERIFY_CHUNK, Math.max(len, 1)));
    let done = 0;
    while (done < len) {
      const want = Math.min(chunk.length, len - done);
      const got = await readFully(fh, chunk.subarray(0, want), HEADER_SIZE + done);
      if (got < want) return { ok: false, problem: 'truncated' };
      hash.update(chunk.subarray(0, want));
      done += want;
    }
    digest = hash.digest();
  }
  if (!timingSafeEqual(digest, h.subarray(OFF_SHA, OFF_SHA + 32)))
    return { ok: false, problem: 'payload-sha256' };
  return { ok: true, payload, sha256: digest.toString('hex'), facts };
}

/** Read into `buf` from `position` until it is full or the file ends; returns the bytes read. */
async function readFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/**
 * Remove the bad file whose stat is `bad` from `path`, never a good entry that another process
 * renamed in after we read: POSIX has no "unlink if still this inode", so the current file is first
 * renamed aside (atomic), then compared by device+inode. If it is not the bad one, it is linked back
 * (link fails with EEXIST if a yet newer entry is already in place, which is as good) and the aside
 * name removed. Readers may see a miss during the swap, never wrong bytes.
 */
async function removeBad(path: string, bad: Stats): Promise<void> {
  const aside = join(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.bad`,
  );
  try {
    await rename(path, aside);
  } catch (e) {
    if (isMissing(e)) return; // already removed by another reader
    throw e;
  }
  let moved: Stats;
  try {
    moved = await lstat(aside);
  } catch (e) {
    if (isMissing(e)) return;
    throw e;
  }
  if (moved.ino !== bad.ino || moved.dev !== bad.dev) {
    try {
      await link(aside, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        await unlinkIfPresent(aside);
        throw e;
      }
    }
  }
  await unlinkIfPresent(aside);
}

async function unlinkIfPresent(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}

/**
 * Remove both files of a bad output entry: the `.out` whose stat is `out`, and the payload opened as
 * `payload` (or, if none was opened because the `.out` was already bad, whichever payload is there: at
 * worst a concurrent put of the same key loses its payload, which costs that entry one miss).
 */
async function removeBadOutput(
  path: string,
  out: Stats,
  payloadPath: string,
  payload: Stats | undefined,
): Promise<void> {
  if (out.isFile()) await removeBad(path, out);
  let st = payload;
  if (!st) {
    try {
      st = await lstat(payloadPath);
    } catch (e) {
      if (isMissing(e)) return;
      throw e;
    }
  }
  if (st.isFile()) await removeBad(payloadPath, st);
}

/**
 * Hard-link `from` to `dest` through a temp name in dest's directory (link, check, rename: atomic).
 * Returns the stat of the linked file, or undefined (nothing left behind) when the link cannot be made
 * (EXDEV, EPERM, ENOTSUP, EMLINK, a missing file, …) or `from` is not a regular file of `size` bytes.
 */
async function linkInto(from: string, dest: string, size: number): Promise<Stats | undefined> {
  const temp = join(dirname(dest), `.${basename(dest)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await link(from, temp);
  } catch {
    return undefined;
  }
  try {
    const st = await lstat(temp);
    if (!st.isFile() || st.size !== size) {
      await unlinkIfPresent(temp);
      return undefined;
    }
    await rename(temp, dest);
    return st;
  } catch (e) {
    await unlinkIfPresent(temp).catch(() => undefined);
    throw e;
  }
}

async function removeStaleTemps(scan: Scan): Promise<number> {
  const cutoff = Date.now() - STALE_TEMP_MS;
  let n = 0;
  for (const t of scan.temps) if (t.mtimeMs < cutoff && (await unlinkIfPresent(t.path))) n++;
  return n;
}

const PREFIX_DIR = /^[0-9a-f]{2}$/;
const TEMP_FILE = /^\..*\.(?:tmp|bad)$/;
const OUTPUT_FILE = /^[0-9a-f]{64}\.out$/;
const PAYLOAD_FILE = /^[0-9a-f]{64}\.mar$/;
const SIGNATURE_FILE = /^[0-9a-f]{64}\.sig$/;
const BLOB_FILE = /^[0-9a-f]{64}\.blob$/;

/**
 * Walk `<root>/<2 hex>/<files>`; anything else (the secret file, foreign files) is ignored. An output's
 * `.out` and `.mar` (same directory) become one entry; a `.mar` without its `.out` is listed with the
 * temps, aged by its mtime (a linked payload's is the output's, written just before the link).
 */
async function scanRoot(root: string): Promise<Scan> {
  const scan: Scan = { entries: [], misplaced: [], temps: [] };
  let tops: string[];
  try {
    tops = await readdir(root);
  } catch (e) {
    if (isMissing(e)) return scan;
    throw e;
  }
  for (const top of tops.sort()) {
    if (!PREFIX_DIR.test(top)) continue;
    const dir = join(root, top);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if (isMissing(e) || (e as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
      throw e;
    }
    const outputs: EntryFile[] = [];
    const payloads = new Map<string, { path: string; st: Stats }>();
    for (const name of names.sort()) {
      const isOutput = OUTPUT_FILE.test(name);
      const isSignature = SIGNATURE_FILE.test(name);
      const isBlob = BLOB_FILE.test(name);
      const isPayload = !isOutput && PAYLOAD_FILE.test(name);
      const isKey = isOutput || isSignature || isBlob || CACHE_KEY_PATTERN.test(name);
      if (!isKey && !isPayload && !TEMP_FILE.test(name)) continue;
      const path = join(dir, name);
      let st: Stats;
      try {
        st = await lstat(path);
      } catch (e) {
        if (isMissing(e)) continue; // renamed or removed by another process while we walked
        throw e;
      }
      if (isPayload) {
        if (st.isFile()) payloads.set(name.slice(0, -PAYLOAD_SUFFIX.length), { path, st });
        continue;
      }
      if (!isKey) {
        if (st.isFile()) scan.temps.push({ path, mtimeMs: st.mtimeMs });
        continue;
      }
      const file: EntryFile = {
        key: isOutput
          ? name.slice(0, -OUTPUT_SUFFIX.length)
          : isSignature
            ? name.slice(0, -SIGNATURE_SUFFIX.length)
            : isBlob
              ? name.slice(0, -BLOB_SUFFIX.length)
              : name,
        kind: isOutput ? 'output' : isSignature ? 'signature' : isBlob ? 'blob' : 'entry',
        path,
        size: st.size,
        mtimeMs: st.mtimeMs,
      };
      if (isOutput) outputs.push(file);
      else if (name.startsWith(top)) scan.entries.push(file);
      else scan.misplaced.push(file);
    }
    for (const file of outputs) {
      const payload = payloads.get(file.key);
      if (payload) {
        payloads.delete(file.key);
        file.payloadPath = payload.path;
        file.size += payload.st.size;
      }
      if (file.key.startsWith(top)) scan.entries.push(file);
      else scan.misplaced.push(file);
    }
    for (const { path, st } of payloads.values()) scan.temps.push({ path, mtimeMs: st.mtimeMs });
  }
  scan.entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.kind < b.kind ? -1 : 1));
  return scan;
}

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function assertBlobDigest(sha256: string): void {
  if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256))
    throw new UsageError(
      'BLOB_BAD_DIGEST' satisfies BlobErrorCode,
      `a blob is named by 64 lowercase hex digits, got ${JSON.stringify(String(sha256).slice(0, 80))}`,
    );
}

/** The size of a regular file (lstat: a symlink is not one), or undefined when absent or not a file. */
async function regularFileSize(path: string): Promise<number | undefined> {
  try {
    const st = await lstat(path);
    return st.isFile() ? st.size : undefined;
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw e;
  }
}

/** Check a blob file: its bytes hash to its name (hashed in chunks). */
async function checkBlob(fh: FileHandle, fileSize: number, sha256: string): Promise<Check> {
  if (fileSize > MAX_BLOB_BYTES) return { ok: false, problem: 'too-large' };
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(BLOB_CHUNK, fileSize)));
  for (let at = 0; at < fileSize;) {
    const want = Math.min(buf.length, fileSize - at);
    if ((await readFully(fh, buf.subarray(0, want), at)) < want) return { ok: false, problem: 'truncated' };
    hash.update(buf.subarray(0, want));
    at += want;
  }
  const digest = hash.digest('hex');
  return digest === sha256
    ? { ok: true, payload: undefined, sha256: digest, facts: undefined }
    : { ok: false, problem: 'payload-sha256' };
}
