/**
 * The worker-thread protocols (docs/ARCHITECTURE.md "Pipeline"): plain, structured-cloneable data only.
 * - `workers/sign-entry.ts` (the piscina pool): `SignEntryTask` → `SignEntryResult`, with a claim channel
 *   (`ClaimRequest` / `ClaimReply` on a MessagePort) through which a thread asks the main thread whether
 *   a PE's signature already exists or is being made (single-flight on the signature key), so a PE found
 *   in two containers is signed once; the same port carries the task's throttled `TaskProgress`.
 * - `workers/check-entry.ts` (the same pool, export `checkEntry`): `CheckEntryTask` → `CheckEntryResult`,
 *   a passthrough entry decoded whole (and its CRC-32 compared, zip) before the container is signed.
 * - `workers/side-hash.ts` (a plain thread): `DigestRequest` → `DigestReply` over shared memory.
 * A task names where the keys are (config path + profile), never carries key material; entry bytes are
 * transferred, not copied.
 */
import type { MessagePort } from 'node:worker_threads';
import type { CodecSettings, DecodedFacts } from '../codecs/types.js';
import type { PlainError } from '../errors.js';

/** Codes the worker-thread entries (workers/sign-entry.ts, workers/check-entry.ts) raise themselves. */
export type WorkerErrorCode =
  | 'CONFIG_CHANGED'
  | 'CONFIG_NO_AUTHENTICODE'
  | 'POLICY_NOT_PE'
  | 'SIGNED_PE_INVALID'
  | 'CODEC_SETTINGS_CHANGED'
  | 'ENTRY_CORRUPT';

export interface SignEntryTask {
  /** Absolute path of the config file; the worker loads the profile from it once per thread. */
  configPath: string;
  /** sha256 of the config file the main thread loaded: a changed file makes the thread reload. */
  configSha256: string;
  profile: string;
  /** The entry name (for error messages only). */
  name: string;
  /** The entry's stored bytes from the input container; its ArrayBuffer is in the transferList. */
  input: Uint8Array;
  /** The codec the stored bytes are in (from the container: MAR sniffs them, zip names its method). */
  codec: CodecSettings;
  /** Decompressed-size cap (codec bomb guard). */
  maxOutputSize: number;
  /**
   * The claim channel (transferred): the thread sends one `ClaimRequest` once it knows the PE's image
   * digest and follows the reply. Absent (canary): the thread signs without asking.
   */
  claims?: MessagePort;
}

export interface SignEntryTimings {
  decompressMs: number;
  signMs: number;
  verifyMs: number;
  compressMs: number;
}

export type SignEntryResult =
  | {
      ok: true;
      /** Signed PE, re-encoded with the input entry's codec settings (transferred back). */
      output: Uint8Array;
      /** settingsKey() of the input entry, re-checked on the output. */
      codecSettings: string;
      /** The signed PE's size and CRC-32 (what `output` decodes to). */
      decoded: DecodedFacts;
      /** Size of the PE as it came in (decoded input). */
      decodedSize: number;
      /** Hex sha256 of `output`, computed in the worker so the main thread does not hash it again. */
      outputSha256: string;
      /** Whether this task made a new Authenticode signature (false: it applied an existing one). */
      madeSignature: boolean;
      /**
       * The signature this task made (also sent on the claim port as soon as it was made, for the tasks
       * waiting on it). Repeated here because messages on two ports have no order: the result may reach
       * the main thread before the claim port's message does.
       */
      signature?: { der: Uint8Array; tsa?: string };
      /**
       * The timestamp authority (its configured URL) that answered for the signature this task made, or
       * that the main thread named with a signature it handed over; absent when unknown or not timestamped.
       */
      tsa?: string;
      timings: SignEntryTimings;
    }
  | { ok: false; error: PlainError };

/** One passthrough entry's integrity check: decode it whole within the bounds, compare what is declared. */
export interface CheckEntryTask {
  /** The entry name (for error messages only). */
  name: string;
  /** The entry's stored bytes: a view of shared memory (not copied), or a copy. Only read. */
  input: Uint8Array;
  codec: CodecSettings;
  /** Decode bounds (config `limits`). */
  maxOutputSize: number;
  maxRatio: number;
  /** What the container declares the bytes decode to (zip's CRC-32 and size); absent for MAR. */
  expect?: DecodedFacts;
}

export type CheckEntryResult =
  | {
      ok: true;
      /** Bytes the entry decoded to. */
      decodedSize: number;
      /** Thread time of the decode and compare. */
      ms: number;
    }
  | { ok: false; error: PlainError };

/** Thread → main: the PE's identity for the signature key, sent once per task. */
export interface ClaimRequest {
  type: 'claim';
  /** Hex Authenticode image digest of the PE as it will be signed (old certificate table stripped). */
  imageDigest: string;
  /** Bytes that digest covers. */
  imageLength: number;
}

/**
 * Thread → main, on the claim port while a task runs: how far it is, in "work bytes" of the entry's
 * stored size S: the decode pass counts stored bytes consumed (0..S), the encode pass uncompressed bytes
 * taken in scaled to S (S..2S); `total` = 2S. Sent at most every TASK_PROGRESS_INTERVAL_MS, so a big
 * entry moves the progress display while it is decoded and recompressed; the result says it is done.
 */
export interface TaskProgress {
  type: 'progress';
  done: number;
  total: number;
}

/** The least time between two TaskProgress messages of one task. */
export const TASK_PROGRESS_INTERVAL_MS = 100;

/** Main → thread: sign it yourself, or use this signature (DER SignedData), or fail. */
export type ClaimReply =
  { type: 'sign' } | { type: 'use'; der: Uint8Array; tsa?: string } | { type: 'fail'; error: PlainError };

/** Thread → main after a `sign` reply: the signature made, or why none was. */
export type ClaimOutcome =
  { type: 'signed'; der: Uint8Array; tsa?: string } | { type: 'failed'; error: PlainError };

/**
 * Main → side-hash thread: one digest over byte ranges of shared memory, in order (one range: a view;
 * several: a container signature's signed stream, which leaves the signature slots out).
 */
export interface DigestRequest {
  id: number;
  buffer: SharedArrayBuffer;
  /** [offset, length] pairs within `buffer`. */
  ranges: [number, number][];
  algorithm: string;
}

export type DigestReply = { id: number; hex: string } | { id: number; error: string };
