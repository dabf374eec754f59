import {
  createHash,
  createHmac,
  createSecretKey,
  randomBytes,
  timingSafeEqual,
  type Hash,
  type KeyObject,
} from 'node:crypto';
import { constants, readlinkSync, type Stats } from 'node:fs';
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CodedError, ConfigError, TransientError, UsageError } from '../src/errors.js';
import { AtomicFile } from '../src/io/atomic.js';
import {
  errno,
  hasProcFd,
  openDir,
  READ_FLAGS,
  realiseError,
  removeEntry,
  typeOf,
  type DirRef,
  type PathType,
} from './confined.js';
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
  type CheckMarkers,
  type DecodedFacts,
  type EntryPresence,
  type OutputCacheStore,
  type OutputHit,
  type OutputSink,
  type PayloadDigester,
  type RangedReads,
} from './types.js';
import type { CacheErrorCode } from './errors.js';

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
/**
 * File name suffix of a passthrough check marker (`<key>.chk`): the entry layout with an empty payload,
 * under the check key domain, so its HMAC binds it to the key it vouches for.
 */
export const CHECK_SUFFIX = '.chk';
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
  | 'misplaced'
  /** A symlink where an entry file belongs (never followed). */
  | 'symlink'
  /** The file opened is not in the cache: a directory on the way is a symlink (never followed for writes). */
  | 'outside-root'
  /** The entry file cannot be opened for reading (EACCES, EPERM). */
  | 'unreadable';

/** Times a prefix directory is re-made when something keeps replacing it, before a put gives up. */
const DIR_ATTEMPTS = 3;

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
  /** The prefix directory it was found in (the key's own, except for misplaced files). */
  dir: string;
  /** The entry file's name; for an output, its `<key>.out`. */
  name: string;
  /** An output's `<key>.mar` when present (absent: a bad entry, found so by verify). */
  payloadName?: string;
  /** Bytes of the entry: for an output, both files. */
  size: number;
  /** The LRU clock: the entry file's (for an output, the `.out`'s; never the shared payload's). */
  mtimeMs: number;
}

/** Something in the cache that is neither a regular file nor a directory where one belongs. */
interface UnsafeFile {
  /** Its prefix directory, or undefined for a name in the root itself. */
  dir: string | undefined;
  name: string;
  type: PathType;
}

interface Scan {
  entries: EntryFile[];
  /** Valid key names in the wrong prefix directory: never found by get, reported by verify. */
  misplaced: EntryFile[];
  /**
   * `.*.tmp` and `.*.bad` files (in-flight writes, or leftovers of a crash), and payloads without
   * their `.out` (a put in flight, or one that died between its two renames).
   */
  temps: { dir: string; name: string; mtimeMs: number }[];
  /**
   * Symlinks, FIFOs, sockets, devices anywhere in the root or its prefix directories, directories
   * inside a prefix directory, and a file where a prefix directory belongs: never written through,
   * reported by verify, removed by repair.
   */
  unsafe: UnsafeFile[];
}

/** An entry file opened for reading (never through a symlink, never blocking), or why not. */
type Opened =
  | { kind: 'file'; fh: FileHandle; st: Stats }
  | { kind: 'absent' }
  /**
   * Bad: `fh`/`st` when it opened (a FIFO, a directory…); `removable` unless it lies behind a planted
   * link (the next put replaces the link, nothing is removed through it).
   */
  | { kind: 'bad'; problem: CacheEntryProblem; fh?: FileHandle; st?: Stats; removable: boolean };

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
 * in the meantime survives. Safe with someone else able to write into the cache (confined.ts): no
 * symlink below the root is followed, no open blocks, and nothing is written outside the root. A root
 * that is itself a symlink is resolved once, when the store first uses it.
 */
export class FsCacheStore
  implements CacheStore, OutputCacheStore, EntryPresence, RangedReads, BlobStore, CheckMarkers
{
  readonly root: string;
  /** Every capability of the CacheStore contract: this store is the reference implementation. */
  readonly presence: EntryPresence = this;
  readonly ranged: RangedReads = this;
  readonly outputs: OutputCacheStore = this;
  readonly blobs: BlobStore = this;
  readonly checks: CheckMarkers = this;
  /** Blob uploads in progress in this process, by digest (one writer per unfinished upload). */
  private readonly receiving = new Set<string>();
  private readonly secret: KeyObject;
  private readonly onBadEntry: FsCacheStoreOptions['onBadEntry'];
  private counters = { hits: 0, misses: 0, corrupt: 0, puts: 0 };
  private outputCounters = { hits: 0, misses: 0, corrupt: 0, puts: 0 };
  /** The root's real path, once it exists (a configured root may be a symlink: followed here, once). */
  private realRoot: string | undefined;
  private blobCounters = { puts: 0 };

  constructor(options: FsCacheStoreOptions) {
    if (typeof options?.root !== 'string' || options.root === '')
      throw new ConfigError(
        'CACHE_BAD_ROOT' satisfies CacheErrorCode,
        `options.root must be a non-empty path, got ${typeof options?.root}`,
      );
    const secret: unknown = options.hmacSecret;
    if (!(secret instanceof Uint8Array))
      throw new ConfigError(
        'CACHE_BAD_SECRET' satisfies CacheErrorCode,
        `options.hmacSecret must be a Uint8Array, got ${typeof secret}`,
      );
    if (secret.length < MIN_SECRET_BYTES)
      throw new ConfigError(
        'CACHE_SECRET_TOO_SHORT' satisfies CacheErrorCode,
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
    return this.getAt(key, '');
  }

  /** A check marker's file (`<key>.chk`, beside the entries; the entry layout, empty payload). */
  checkPath(key: string): string {
    return this.entryPath(key) + CHECK_SUFFIX;
  }

  /**
   * Whether a valid check marker is stored (read and authenticated through the same confined open as
   * an entry: a link, FIFO or forged file is a bad entry, counted and removed, never a pass). Not
   * counted as an entry hit or miss.
   */
  async hasCheck(key: string): Promise<boolean> {
    return (await this.getAt(key, CHECK_SUFFIX, false)) !== undefined;
  }

  async putCheck(key: string): Promise<void> {
    return this.putAt(key, CHECK_SUFFIX, new Uint8Array(0), undefined);
  }

  async getSignature(key: string): Promise<Uint8Array | undefined> {
    return (await this.getAt(key, SIGNATURE_SUFFIX))?.payload;
  }

  async putSignature(key: string, der: Uint8Array): Promise<void> {
    return this.putAt(key, SIGNATURE_SUFFIX, der, undefined);
  }

  private async getAt(key: string, suffix: string, counted = true): Promise<CachedEntry | undefined> {
    assertCacheKey(key);
    const o = await this.openRead(key, suffix);
    if (o.kind === 'absent') {
      if (counted) this.counters.misses++;
      return undefined;
    }
    try {
      const r =
        o.kind === 'file'
          ? await checkEntry(o.fh, o.st.size, key, this.secret, { kind: 'alloc' })
          : { ok: false as const, problem: o.problem };
      if (r.ok) {
        if (counted) this.counters.hits++;
        await touch(o.kind === 'file' ? o : undefined);
        return r.payload && { payload: r.payload, sha256: r.sha256, ...(r.facts ? { facts: r.facts } : {}) };
      }
      this.counters.corrupt++;
      if (counted) this.counters.misses++;
      if (r.problem !== 'other-length') await this.onBadEntry?.(key, r.problem);
      // The handle stays open until the bad file is gone, so its inode cannot be reused meanwhile.
      // A failed removal (read-only cache) still leaves a miss: the bad bytes are never served.
      await this.discard(key, suffix, o);
      return undefined;
    } finally {
      await o.fh?.close();
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
    assertCacheKey(key);
    const o = await this.openRead(key, '');
    if (o.kind === 'absent') return undefined;
    try {
      const r =
        o.kind === 'file'
          ? await checkEntry(o.fh, o.st.size, key, this.secret, { kind: 'into', target, digest, onRead })
          : { ok: false as const, problem: o.problem };
      if (r.ok) {
        this.counters.hits++;
        await touch(o.kind === 'file' ? o : undefined);
        return { sha256: r.sha256, ...(r.facts ? { facts: r.facts } : {}) };
      }
      if (r.problem === 'other-length') return undefined;
      this.counters.corrupt++;
      await this.onBadEntry?.(key, r.problem);
      await this.discard(key, '', o);
      return undefined;
    } finally {
      await o.fh?.close();
    }
  }

  async put(key: string, payload: Uint8Array, facts?: DecodedFacts): Promise<void> {
    return this.putAt(key, '', payload, facts);
  }

  private async putAt(
    key: string,
    suffix: string,
    payload: Uint8Array,
    facts: DecodedFacts | undefined,
  ): Promise<void> {
    assertCacheKey(key);
    if (!(payload instanceof Uint8Array))
      throw new CodedError(
        'CACHE_BAD_PAYLOAD' satisfies CacheErrorCode,
        `payload must be a Uint8Array, got ${typeof payload}`,
      );
    if (payload.length > MAX_PAYLOAD_BYTES)
      throw new CodedError(
        'CACHE_PAYLOAD_TOO_LARGE' satisfies CacheErrorCode,
        `payload is ${payload.length} bytes, more than the ${MAX_PAYLOAD_BYTES} a cache entry may hold`,
      );
    if (facts !== undefined && !validFacts(facts))
      throw new CodedError(
        'CACHE_BAD_PAYLOAD' satisfies CacheErrorCode,
        'facts must hold a u64 size and a u32 crc32',
      );
    const header = buildHeader(key, payload, this.secret, facts);
    await this.inDir(key.slice(0, 2), true, async (dir) => {
      const f = await AtomicFile.create(join(dir.path, key + suffix), 0o644);
      try {
        await f.write(header);
        await f.write(payload);
        await f.commit();
      } catch (e) {
        await f.abort();
        throw e;
      }
    });
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
    assertCacheKey(key);
    const o = await this.openRead(key, OUTPUT_SUFFIX);
    if (o.kind === 'absent') {
      this.outputCounters.misses++;
      return undefined;
    }
    const opened: OpenedPayload = {};
    try {
      const r: OutputCheck =
        o.kind === 'file'
          ? await checkOutput(
              o.fh,
              o.st.size,
              key,
              this.secret,
              () => this.openRead(key, PAYLOAD_SUFFIX),
              sink,
              opened,
            )
          : { ok: false, problem: o.problem };
      if (r.ok) {
        this.outputCounters.hits++;
        await touch(o.kind === 'file' ? o : undefined);
        return r.hit;
      }
      this.outputCounters.corrupt++;
      this.outputCounters.misses++;
      this.counters.corrupt++;
      await this.onBadEntry?.(key, r.problem);
      // Both handles stay open until the bad files are gone (their inodes cannot be reused meanwhile).
      await this.discardOutput(key, o, opened).catch(() => undefined);
      return undefined;
    } finally {
      await opened.fh?.close();
      await o.fh?.close();
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
    assertCacheKey(key);
    if (!(payload instanceof Uint8Array) || !(info?.meta instanceof Uint8Array))
      throw new CodedError(
        'CACHE_BAD_PAYLOAD' satisfies CacheErrorCode,
        'payload and meta must be Uint8Arrays',
      );
    if (payload.length > MAX_PAYLOAD_BYTES || info.meta.length > MAX_OUTPUT_META_BYTES)
      throw new CodedError(
        'CACHE_PAYLOAD_TOO_LARGE' satisfies CacheErrorCode,
        `output ${payload.length} bytes / meta ${info.meta.length} bytes exceed ${MAX_PAYLOAD_BYTES} / ${MAX_OUTPUT_META_BYTES}`,
      );
    if (!/^[0-9a-f]{64}$/.test(info.sha256))
      throw new CodedError(
        'CACHE_BAD_PAYLOAD' satisfies CacheErrorCode,
        'sha256 must be 64 lowercase hex digits',
      );
    const linked = await this.inDir(key.slice(0, 2), true, async (dir) => {
      const outName = key + OUTPUT_SUFFIX;
      const payloadName = key + PAYLOAD_SUFFIX;
      let placed =
        typeof options.linkFrom === 'string'
          ? await linkInto(options.linkFrom, dir, payloadName, payload.length)
          : undefined;
      const linked = placed !== undefined;
      if (!placed) {
        const p = await AtomicFile.create(join(dir.path, payloadName), 0o644);
        try {
          await p.write(payload, 0);
          placed = await p.handle.stat();
          await p.commit();
        } catch (e) {
          await p.abort();
          throw e;
        }
      }
      const f = await AtomicFile.create(join(dir.path, outName), 0o644);
      try {
        // Meta first: the header (with the sha512, which may still be being computed on another thread,
        // and the HMAC over it) is written last, before the fsync and rename.
        await f.write(info.meta, OUTPUT_HEADER_SIZE);
        const sha512 = await info.sha512;
        if (!/^[0-9a-f]{128}$/.test(sha512))
          throw new CodedError(
            'CACHE_BAD_PAYLOAD' satisfies CacheErrorCode,
            'sha512 must be 128 lowercase hex digits',
          );
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
        await removeBad(dir, payloadName, placed).catch(() => undefined);
        throw e;
      }
      return linked;
    });
    this.outputCounters.puts++;
    return { linked: linked === true };
  }

  /** A blob's file (`<root>/<sha[0..2]>/<sha>.blob`). */
  blobPath(sha256: string): string {
    assertBlobDigest(sha256);
    return join(this.root, sha256.slice(0, 2), sha256 + BLOB_SUFFIX);
  }

  /** An unfinished upload of a blob: a temp name, so prune/verify remove it once stale. */
  uploadPath(sha256: string): string {
    assertBlobDigest(sha256);
    return join(this.root, sha256.slice(0, 2), uploadName(sha256));
  }

  async blobSize(sha256: string): Promise<number | undefined> {
    assertBlobDigest(sha256);
    const o = await this.openRead(sha256, BLOB_SUFFIX);
    if (o.kind !== 'absent') await o.fh?.close();
    return o.kind === 'file' ? o.st.size : undefined;
  }

  async uploadOffset(sha256: string): Promise<number> {
    assertBlobDigest(sha256);
    const o = await this.openReadAt(sha256.slice(0, 2), uploadName(sha256));
    if (o.kind !== 'absent') await o.fh?.close();
    return o.kind === 'file' ? o.st.size : 0;
  }

  async getBlob(sha256: string): Promise<Uint8Array | undefined> {
    const reader = await this.openBlob(sha256);
    if (!reader) return undefined;
    try {
      const out = new Uint8Array(Buffer.allocUnsafeSlow(reader.size).buffer, 0, reader.size);
      await reader.readInto(out);
      return out;
    } catch (e) {
      if ((e as CodedError).code === 'BLOB_CORRUPT') return undefined;
      throw e;
    } finally {
      await reader.close();
    }
  }

  /** A blob opened like every cache read (no link followed, no FIFO blocked on), verified as it streams. */
  async openBlob(sha256: string): Promise<BlobReader | undefined> {
    assertBlobDigest(sha256);
    const o = await this.openRead(sha256, BLOB_SUFFIX);
    if (o.kind === 'absent') return undefined;
    if (o.kind !== 'file' || o.st.size > MAX_BLOB_BYTES) {
      this.counters.corrupt++;
      await this.discard(sha256, BLOB_SUFFIX, o);
      if (o.kind === 'bad') await o.fh?.close();
      else await o.fh.close();
      return undefined;
    }
    await touch(o);
    const { fh, st } = o;
    const size = st.size;
    const onBad = async (): Promise<void> => {
      this.counters.corrupt++;
      await this.onBadEntry?.(sha256, 'payload-sha256');
      await this.discard(sha256, BLOB_SUFFIX, o);
    };
    let closed = false;
    return {
      size,
      chunks: () => checkedChunks(fh, size, sha256, onBad),
      async readInto(into: Uint8Array) {
        if (into.length < size) throw new RangeError(`readInto needs ${size} bytes, got ${into.length}`);
        // Each chunk is read into its own place in `into`: nothing is reused, so nothing is copied.
        for await (const _ of checkedChunks(fh, size, sha256, onBad, into));
      },
      async close() {
        if (closed) return;
        closed = true;
        await fh.close();
      },
    };
  }

  async putBlob(sha256: string, bytes: Uint8Array): Promise<{ created: boolean }> {
    assertBlobDigest(sha256);
    if (!(bytes instanceof Uint8Array))
      throw new CodedError(
        'CACHE_BAD_PAYLOAD' satisfies CacheErrorCode,
        `blob bytes must be a Uint8Array, got ${typeof bytes}`,
      );
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
    if ((await this.blobSize(sha256)) === bytes.length) return { created: false };
    await this.inDir(sha256.slice(0, 2), true, async (dir) => {
      const f = await AtomicFile.create(join(dir.path, sha256 + BLOB_SUFFIX), 0o644);
      try {
        await f.write(bytes);
        await f.commit();
      } catch (e) {
        await f.abort();
        throw e;
      }
    });
    this.blobCounters.puts++;
    return { created: true };
  }

  async receiveBlob(
    sha256: string,
    upload: { size: number; offset: number; body: AsyncIterable<Uint8Array> | Iterable<Uint8Array> },
  ): Promise<BlobReceipt> {
    assertBlobDigest(sha256);
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
    const held = await this.blobSize(sha256);
    if (held !== undefined) return { complete: true, offset: held, created: false };
    if (this.receiving.has(sha256))
      throw new TransientError(
        'BLOB_UPLOAD_BUSY' satisfies BlobErrorCode,
        `blob ${sha256} is being uploaded by another request; retry`,
      );
    this.receiving.add(sha256);
    try {
      const r = await this.inDir(sha256.slice(0, 2), true, (dir) =>
        receiveInto(dir, sha256, size, offset, upload.body),
      );
      if (r!.created) this.blobCounters.puts++;
      return r!;
    } finally {
      this.receiving.delete(sha256);
    }
  }

  /** Corrupt entries this process met (stats().corrupt without scanning the cache directory). */
  get corruptSeen(): number {
    return this.counters.corrupt;
  }

  async stats(): Promise<CacheStats> {
    const scan = await scanRoot(await this.base(false));
    let bytes = 0;
    const byKind = {
      entry: { entries: 0, bytes: 0 },
      signature: { entries: 0, bytes: 0 },
      output: { entries: 0, bytes: 0 },
      blob: { entries: 0, bytes: 0 },
      check: { entries: 0, bytes: 0 },
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
    const base = await this.base(false);
    const scan = await scanRoot(base);
    const report: CacheVerifyReport = { checked: 0, ok: 0, bad: [], unsafe: [] };
    for (const e of scan.entries) {
      const suffix = e.name.slice(64);
      const o = await this.openRead(e.key, suffix);
      if (o.kind === 'absent') continue; // pruned or replaced-and-removed by another process meanwhile
      const opened: OpenedPayload = {};
      try {
        const r =
          o.kind !== 'file'
            ? { ok: false as const, problem: o.problem }
            : e.kind === 'output'
              ? await checkOutput(
                  o.fh,
                  o.st.size,
                  e.key,
                  this.secret,
                  () => this.openRead(e.key, PAYLOAD_SUFFIX),
                  undefined,
                  opened,
                )
              : e.kind === 'blob'
                ? await checkBlob(o.fh, o.st.size, e.key)
                : await checkEntry(o.fh, o.st.size, e.key, this.secret, { kind: 'chunked' });
        report.checked++;
        if (r.ok) report.ok++;
        else {
          report.bad.push({
            key: e.key,
            ...(e.kind !== 'entry' ? { kind: e.kind } : {}),
            reason: r.problem,
          });
          if (repair && e.kind === 'output') await this.discardOutput(e.key, o, opened);
          else if (repair) await this.discard(e.key, suffix, o, true);
        }
      } finally {
        await opened.fh?.close();
        await o.fh?.close();
      }
    }
    for (const e of scan.misplaced) {
      report.checked++;
      report.bad.push({
        key: e.key,
        ...(e.kind !== 'entry' ? { kind: e.kind } : {}),
        reason: 'misplaced',
      });
      if (repair)
        await this.inDir(e.dir, false, async (dir) => {
          await unlinkIfPresent(join(dir.path, e.name));
          if (e.payloadName) await unlinkIfPresent(join(dir.path, e.payloadName));
        });
    }
    for (const u of scan.unsafe) {
      const path = join(base!, ...(u.dir ? [u.dir] : []), u.name);
      if (!repair) {
        report.unsafe.push({ path, type: u.type });
        continue;
      }
      // Removed as what it is (a link itself, never its target; a directory level by level).
      const removed = await (
        u.dir === undefined
          ? this.inRoot((dir) => removeEntry(dir, u.name))
          : this.inDir(u.dir, false, (dir) => removeEntry(dir, u.name))
      ).then(
        () => true,
        () => false,
      );
      report.unsafe.push({ path, type: u.type, removed });
    }
    if (repair) report.staleTempRemoved = await this.removeStaleTemps(scan);
    return report;
  }

  async prune(maxBytes: number): Promise<CachePruneResult> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0)
      throw new CodedError(
        'CACHE_BAD_MAX_SIZE' satisfies CacheErrorCode,
        `maxBytes must be a non-negative integer, got ${maxBytes}`,
      );
    const scan = await scanRoot(await this.base(false));
    const staleTempRemoved = await this.removeStaleTemps(scan);
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
      await this.inDir(e.dir, false, async (dir) => {
        if (await unlinkIfPresent(join(dir.path, e.name))) {
          removed++;
          freedBytes += e.size;
        }
        if (e.payloadName) await unlinkIfPresent(join(dir.path, e.payloadName));
      });
      remaining -= e.size;
    }
    return { removed, freedBytes, remainingBytes: remaining, staleTempRemoved };
  }

  /**
   * The root's real path: a configured root that is a symlink is followed here, once per store. Undefined
   * while the root does not exist, unless `create` (then it is made).
   */
  private async base(create: boolean): Promise<string | undefined> {
    if (this.realRoot !== undefined) return this.realRoot;
    try {
      this.realRoot = await realpath(this.root);
    } catch (e) {
      if (errno(e) !== 'ENOENT' || !create) {
        if (errno(e) === 'ENOENT') return undefined;
        throw e;
      }
      await mkdir(this.root, { recursive: true });
      this.realRoot = await realpath(this.root);
    }
    return this.realRoot;
  }

  /**
   * Open `<root>/<key[0..2]>/<key><suffix>` for reading: never through a symlink (the last component is
   * opened O_NOFOLLOW, and where the file really is is checked, which catches a planted prefix-directory
   * link), never blocking (O_NONBLOCK: a FIFO opens at once and is then refused by its fstat).
   */
  private openRead(key: string, suffix: string): Promise<Opened> {
    return this.openReadAt(key.slice(0, 2), key + suffix);
  }

  /** `openRead` of any file name in a prefix directory (a blob upload's temp name). */
  private async openReadAt(prefix: string, name: string): Promise<Opened> {
    const base = this.realRoot ?? (await this.base(false));
    if (base === undefined) return { kind: 'absent' };
    const dir = `${base}/${prefix}`;
    const path = `${dir}/${name}`;
    let fh: FileHandle;
    try {
      fh = await open(path, READ_FLAGS);
    } catch (e) {
      switch (errno(e)) {
        case 'ENOENT':
        case 'ENOTDIR': // the prefix is not a directory: nothing stored there (a put replaces it)
          return { kind: 'absent' };
        case 'ELOOP':
          return { kind: 'bad', problem: 'symlink', removable: true };
        case 'ENXIO': // a socket
          return { kind: 'bad', problem: 'not-a-file', removable: true };
        case 'EACCES':
        case 'EPERM':
          return { kind: 'bad', problem: 'unreadable', removable: true };
        default:
          throw e;
      }
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) return { kind: 'bad', problem: 'not-a-file', fh, st, removable: true };
      if (hasProcFd()) {
        // Synchronous on purpose: a /proc magic link is resolved in memory (no disk I/O), ~4 µs, where the
        // libuv round trip of the async call costs ~25 µs of CPU on the warm path's every entry read.
        const at = readlinkSync(`/proc/self/fd/${fh.fd}`);
        if (at !== path) {
          // Renamed aside or removed by another process since the open (`… (deleted)`): a plain miss.
          if (at.startsWith(`${dir}/`)) {
            await fh.close();
            return { kind: 'absent' };
          }
          return { kind: 'bad', problem: 'outside-root', fh, st, removable: false };
        }
      } else {
        const d = await lstat(dir);
        if (!d.isDirectory()) return { kind: 'bad', problem: 'outside-root', fh, st, removable: false };
      }
      return { kind: 'file', fh, st };
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /**
   * Run `fn` in the prefix directory `prefix`, opened and checked (confined.ts: never through a link).
   * With `create` the directory is made, and anything else in its place (a planted symlink, a file, a
   * FIFO) is unlinked first, the link itself, never what it points to; without, undefined when there is
   * no such directory. Errors name real paths.
   */
  private async inDir<T>(
    prefix: string,
    create: boolean,
    fn: (dir: DirRef) => Promise<T>,
  ): Promise<T | undefined> {
    const base = await this.base(create);
    if (base === undefined) return undefined;
    const path = join(base, prefix);
    for (let attempt = 1; ; attempt++) {
      const r = await openDir(path);
      if (r.ok) {
        try {
          return await fn(r.dir);
        } catch (e) {
          throw realiseError(e, r.dir);
        } finally {
          await r.dir.fh.close();
        }
      }
      if (!create) return undefined;
      if (r.why === 'elsewhere' || attempt > DIR_ATTEMPTS)
        throw new CodedError(
          'CACHE_UNSAFE_PATH' satisfies CacheErrorCode,
          r.why === 'elsewhere'
            ? `cache directory ${path} is really ${r.at}: a directory above it was replaced; nothing written`
            : `cache directory ${path} keeps being replaced by something that is not a directory; nothing written`,
        );
      if (r.why === 'not-a-directory') await unlink(path).catch(() => undefined);
      // The prefix directory alone (mkdir does not follow a link at its last component: EEXIST); the
      // root again only if it was removed while this store was open.
      await mkdir(path).catch(async (e: unknown) => {
        if (errno(e) === 'ENOENT') await mkdir(base, { recursive: true });
        else if (errno(e) !== 'EEXIST') throw e;
      });
    }
  }

  /** Run `fn` in the root directory itself, opened and checked. */
  private async inRoot<T>(fn: (dir: DirRef) => Promise<T>): Promise<T | undefined> {
    const base = await this.base(false);
    if (base === undefined) return undefined;
    const r = await openDir(base);
    if (!r.ok) return undefined;
    try {
      return await fn(r.dir);
    } catch (e) {
      throw realiseError(e, r.dir);
    } finally {
      await r.dir.fh.close();
    }
  }

  /**
   * Remove what `openRead` found bad at `<key><suffix>` (by inode, whatever its type), unless it lies
   * behind a planted link. Best effort on the serving path (a read-only cache still misses); `strict`
   * (repair) lets errors through.
   */
  private async discard(key: string, suffix: string, o: Opened, strict = false): Promise<void> {
    if (o.kind !== 'bad' && o.kind !== 'file') return;
    if (o.kind === 'bad' && !o.removable) return;
    const p = this.inDir(key.slice(0, 2), false, (dir) => removeBad(dir, key + suffix, o.st));
    await (strict ? p : p.catch(() => undefined));
  }

  /**
   * Remove both files of a bad output entry: the `.out` as opened (`o`), and the payload opened as
   * `payload` (or, if none was opened because the `.out` was already bad, whatever is at the payload's
   * name: at worst a concurrent put of the same key loses its payload, which costs that entry one miss).
   */
  private async discardOutput(key: string, o: Opened, payload: OpenedPayload): Promise<void> {
    if (o.kind === 'bad' && !o.removable) return;
    await this.inDir(key.slice(0, 2), false, async (dir) => {
      if (o.kind !== 'absent') await removeBad(dir, key + OUTPUT_SUFFIX, o.st);
      if (payload.outside) return;
      await removeBad(dir, key + PAYLOAD_SUFFIX, payload.st);
    });
  }

  /** Remove the leftovers (temps, quarantine files, orphan payloads) older than STALE_TEMP_MS. */
  private async removeStaleTemps(scan: Scan): Promise<number> {
    const cutoff = Date.now() - STALE_TEMP_MS;
    const byDir = new Map<string, string[]>();
    for (const t of scan.temps)
      if (t.mtimeMs < cutoff) byDir.set(t.dir, [...(byDir.get(t.dir) ?? []), t.name]);
    let n = 0;
    for (const [prefix, names] of byDir)
      await this.inDir(prefix, false, async (dir) => {
        for (const name of names) if (await unlinkIfPresent(join(dir.path, name))) n++;
      });
    return n;
  }
}

/** Refresh a hit's mtime (the LRU clock for prune) at most every TOUCH_INTERVAL_MS. Best effort. */
async function touch(o: { fh: FileHandle; st: Stats } | undefined): Promise<void> {
  if (!o) return;
  const now = Date.now();
  // atime is unreliable (noatime); a read-only or foreign-owned cache still serves.
  if (now - o.st.mtimeMs > TOUCH_INTERVAL_MS)
    await o.fh.utimes(now / 1000, now / 1000).catch(() => undefined);
}

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
  /** The payload found lies behind a planted link: not to be removed through it. */
  outside?: boolean;
}

/**
 * Check an output entry completely: the open `.out`'s header, HMAC and meta digest, then the payload
 * file that `openPayload` opens (recorded in `opened`): its size, and its sha256 while each chunk is
 * handed to `sink` (none: `verify`, which also checks the stored sha512).
 */
async function checkOutput(
  fh: FileHandle,
  fileSize: number,
  key: string,
  secret: KeyObject,
  openPayload: () => Promise<Opened>,
  sink: OutputSink | undefined,
  opened: OpenedPayload,
): Promise<OutputCheck> {
  if (fileSize < OUTPUT_HEADER_SIZE) return { ok: false, problem: 'truncated' };
  // Bounded before anything is read: a huge or sparse file is refused by its size alone.
  if (fileSize > OUTPUT_HEADER_SIZE + MAX_OUTPUT_META_BYTES) return { ok: false, problem: 'too-large' };
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

  const p = await openPayload();
  if (p.kind === 'absent') return { ok: false, problem: 'payload-missing' };
  opened.fh = p.fh;
  opened.st = p.st;
  if (p.kind === 'bad') {
    opened.outside = !p.removable;
    return { ok: false, problem: p.problem };
  }
  const pst = p.st;
  if (pst.size < len) return { ok: false, problem: 'truncated' };
  if (pst.size > len) return { ok: false, problem: 'size-mismatch' };
  const sha512 = sink ? undefined : createHash('sha512');
  const streamed = await streamPayload(p.fh, 0, len, sink, sha512);
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
  // Bounded before anything is read: a huge or sparse file is refused by its size alone.
  if (fileSize > HEADER_SIZE + MAX_PAYLOAD_BYTES) return { ok: false, problem: 'too-large' };
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
 * Remove the bad thing whose stat is `bad` (lstat'ed here when not given: a symlink, an unreadable
 * file) from `name` in `dir`, never a good entry that another process renamed in after we read: POSIX
 * has no "unlink if still this inode", so the current file is first renamed aside (atomic), then
 * compared by device+inode. If it is a regular file but not the bad one, it is linked back (link fails
 * with EEXIST if a yet newer entry is already in place, which is as good) and the aside name removed.
 * Anything that is not a regular file is removed as what it is (a link itself; a directory level by
 * level, confined.ts). Readers may see a miss during the swap, never wrong bytes.
 */
async function removeBad(dir: DirRef, name: string, bad: Stats | undefined): Promise<void> {
  const path = join(dir.path, name);
  if (!bad) {
    try {
      bad = await lstat(path);
    } catch (e) {
      if (isMissing(e)) return;
      throw e;
    }
  }
  const aside = `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.bad`;
  try {
    await rename(path, join(dir.path, aside));
  } catch (e) {
    if (isMissing(e)) return; // already removed by another reader
    throw e;
  }
  let moved: Stats;
  try {
    moved = await lstat(join(dir.path, aside));
  } catch (e) {
    if (isMissing(e)) return;
    throw e;
  }
  if (moved.isFile() && (moved.ino !== bad.ino || moved.dev !== bad.dev)) {
    try {
      await link(join(dir.path, aside), path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        await unlinkIfPresent(join(dir.path, aside));
        throw e;
      }
    }
  }
  await removeEntry(dir, aside);
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
 * Hard-link `from` to `name` in `dir` through a temp name there (link, check, rename: atomic). Returns
 * the stat of the linked file, or undefined (nothing left behind) when the link cannot be made (EXDEV,
 * EPERM, ENOTSUP, EMLINK, a missing file, …) or `from` is not a regular file of `size` bytes.
 */
async function linkInto(from: string, dir: DirRef, name: string, size: number): Promise<Stats | undefined> {
  const temp = join(dir.path, `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
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
    await rename(temp, join(dir.path, name));
    return st;
  } catch (e) {
    await unlinkIfPresent(temp).catch(() => undefined);
    throw e;
  }
}

const PREFIX_DIR = /^[0-9a-f]{2}$/;
const TEMP_FILE = /^\..*\.(?:tmp|bad)$/;
const OUTPUT_FILE = /^[0-9a-f]{64}\.out$/;
const PAYLOAD_FILE = /^[0-9a-f]{64}\.mar$/;
const SIGNATURE_FILE = /^[0-9a-f]{64}\.sig$/;
const BLOB_FILE = /^[0-9a-f]{64}\.blob$/;
const CHECK_FILE = /^[0-9a-f]{64}\.chk$/;

/**
 * Walk `<root>/<2 hex>/<files>` (`root` real; undefined: no cache yet). Regular files that are not the
 * cache's (the secret file, foreign files) and directories without a prefix name are ignored; anything
 * that is neither a regular file nor a directory, a file in place of a prefix directory, and a directory
 * inside one are `unsafe`. Prefix directories are opened without following a link and read through
 * their descriptors. An output's `.out` and `.mar` (same directory) become one entry; a `.mar` without
 * its `.out` is listed with the temps, aged by its mtime (a linked payload's is the output's, written
 * just before the link).
 */
async function scanRoot(root: string | undefined): Promise<Scan> {
  const scan: Scan = { entries: [], misplaced: [], temps: [], unsafe: [] };
  if (root === undefined) return scan;
  let tops: string[];
  try {
    tops = await readdir(root);
  } catch (e) {
    if (isMissing(e)) return scan;
    throw e;
  }
  for (const top of tops.sort()) {
    let tst: Stats;
    try {
      tst = await lstat(join(root, top));
    } catch (e) {
      if (isMissing(e)) continue;
      throw e;
    }
    const prefix = PREFIX_DIR.test(top);
    if (!tst.isDirectory()) {
      if (!tst.isFile() || prefix) scan.unsafe.push({ dir: undefined, name: top, type: typeOf(tst) });
      continue;
    }
    if (!prefix) continue;
    const opened = await openDir(join(root, top));
    if (!opened.ok) {
      if (opened.why === 'not-a-directory' && opened.st)
        scan.unsafe.push({ dir: undefined, name: top, type: typeOf(opened.st) });
      continue;
    }
    try {
      await scanPrefix(scan, top, opened.dir);
    } finally {
      await opened.dir.fh.close();
    }
  }
  scan.entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.kind < b.kind ? -1 : 1));
  return scan;
}

async function scanPrefix(scan: Scan, top: string, dir: DirRef): Promise<void> {
  const names = await readdir(dir.path);
  const outputs: EntryFile[] = [];
  const payloads = new Map<string, { name: string; st: Stats }>();
  for (const name of names.sort()) {
    let st: Stats;
    try {
      st = await lstat(join(dir.path, name));
    } catch (e) {
      if (isMissing(e)) continue; // renamed or removed by another process while we walked
      throw e;
    }
    if (!st.isFile()) {
      scan.unsafe.push({ dir: top, name, type: typeOf(st) });
      continue;
    }
    const isOutput = OUTPUT_FILE.test(name);
    const isSignature = SIGNATURE_FILE.test(name);
    const isBlob = BLOB_FILE.test(name);
    const isCheck = CHECK_FILE.test(name);
    const isPayload = !isOutput && PAYLOAD_FILE.test(name);
    const isKey = isOutput || isSignature || isBlob || isCheck || CACHE_KEY_PATTERN.test(name);
    if (!isKey && !isPayload && !TEMP_FILE.test(name)) continue;
    if (isPayload) {
      payloads.set(name.slice(0, -PAYLOAD_SUFFIX.length), { name, st });
      continue;
    }
    if (!isKey) {
      scan.temps.push({ dir: top, name, mtimeMs: st.mtimeMs });
      continue;
    }
    const file: EntryFile = {
      key: name.slice(0, 64),
      kind: isOutput ? 'output' : isSignature ? 'signature' : isBlob ? 'blob' : isCheck ? 'check' : 'entry',
      dir: top,
      name,
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
      file.payloadName = payload.name;
      file.size += payload.st.size;
    }
    if (file.key.startsWith(top)) scan.entries.push(file);
    else scan.misplaced.push(file);
  }
  for (const { name, st } of payloads.values()) scan.temps.push({ dir: top, name, mtimeMs: st.mtimeMs });
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
/** The upload file: read-write, created if absent, never through a link, never blocking on a FIFO. */
const UPLOAD_FLAGS = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** An unfinished upload of a blob: a temp name (prune and verify remove it once stale). */
function uploadName(sha256: string): string {
  return `.${sha256}${BLOB_SUFFIX}.upload.tmp`;
}

/**
 * Receive (the rest of) a blob's bytes into its upload file in the prefix directory `dir` (an open,
 * checked directory: every name below is resolved through its descriptor, never through a link), and
 * rename it into place once the whole blob is there and hashes to its name.
 */
async function receiveInto(
  dir: DirRef,
  sha256: string,
  size: number,
  offset: number,
  body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<BlobReceipt> {
  const partial = join(dir.path, uploadName(sha256));
  const fh = await open(partial, UPLOAD_FLAGS, 0o644);
  let closed = false;
  const close = async (): Promise<void> => {
    if (!closed) {
      closed = true;
      await fh.close();
    }
  };
  const drop = async (): Promise<void> => {
    await close();
    await unlinkIfPresent(partial);
  };
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      await close();
      await removeEntry(dir, uploadName(sha256));
      throw new TransientError(
        'BLOB_UPLOAD_BUSY' satisfies BlobErrorCode,
        `blob ${sha256}: its upload file was not a regular file (removed); retry`,
      );
    }
    const have = st.size;
    if (offset !== have && offset !== 0)
      throw new UsageError(
        'BLOB_UPLOAD_OFFSET' satisfies BlobErrorCode,
        `blob ${sha256}: the upload stands at ${have} bytes, not ${offset}`,
        { details: { offset: have } },
      );
    if (offset === 0 && have > 0) await fh.truncate(0);
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
        await drop();
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
      await drop();
      throw new UsageError(
        'BLOB_DIGEST_MISMATCH' satisfies BlobErrorCode,
        `the ${size} bytes uploaded as blob ${sha256} hash to ${actual}; nothing was stored`,
      );
    }
    await fh.sync();
    await close();
    await rename(partial, join(dir.path, sha256 + BLOB_SUFFIX));
    return { complete: true, offset: size, created: true };
  } finally {
    await close();
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

/**
 * A blob file's bytes in BLOB_CHUNK pieces, hashed as they come; `BLOB_CORRUPT` (after `onBad`) when the
 * file ends early or the bytes do not hash to `sha256`. Into a scratch buffer, each chunk yielded as a
 * copy (a consumer may keep it while the next is read); or straight into `into`, each chunk a view of it.
 */
async function* checkedChunks(
  fh: FileHandle,
  size: number,
  sha256: string,
  onBad: () => Promise<void>,
  into?: Uint8Array,
): AsyncGenerator<Uint8Array> {
  const hash = createHash('sha256');
  const scratch = into ? undefined : Buffer.allocUnsafe(Math.max(1, Math.min(BLOB_CHUNK, size)));
  let complete = size === 0;
  for (let at = 0; at < size;) {
    const want = Math.min(BLOB_CHUNK, size - at);
    const view = into ? into.subarray(at, at + want) : scratch!.subarray(0, want);
    if ((await readFully(fh, view, at)) < want) break;
    hash.update(view);
    yield into ? view : Buffer.from(view);
    at += want;
    complete = at === size;
  }
  if (complete && hash.digest('hex') === sha256) return;
  await onBad();
  throw new CodedError(
    'BLOB_CORRUPT' satisfies BlobErrorCode,
    complete
      ? `blob ${sha256} does not hash to its name`
      : `blob ${sha256} is truncated or does not hash to its name`,
  );
}
