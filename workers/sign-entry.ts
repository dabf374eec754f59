/**
 * Piscina task: one container entry → decompress (with the codec the container names) → check it is a
 * PE → Authenticode-sign, or apply the signature the main thread already holds for this PE → verify →
 * recompress with the entry's own codec settings (bzip2: re-encoding only the blocks signing changed).
 * Runs only in worker threads.
 *
 * Protocol (src/pipeline/protocol.ts): the task names the config file and profile; keys are loaded here
 * once per thread and cached, never sent in messages. Input bytes arrive transferred; the output is
 * transferred back with `Piscina.move()` of an object implementing piscina's transferable protocol
 * (so the result can carry metadata beside the buffer). Once the PE's image digest is known the thread
 * asks the main thread on the task's claim port whether that PE is signed already (or being signed):
 * the main thread single-flights on the signature key, so a PE met in two containers (or two codecs) is
 * signed once and both get identical signed bytes. Errors return as plain data (`toPlainError`); the
 * main thread rebuilds them with `fromPlainError`, so name/code survive the thread boundary.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import type { MessagePort } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { Piscina } from 'piscina';
import { decodeForSigning, readSettings, recompressEntry, settingsKey } from '../src/codecs/index.js';
import { loadConfig, loadProfile } from '../src/config/index.js';
import type { SigningProfile } from '../src/config/types.js';
import { ConfigError, fromPlainError, PolicyError, toPlainError, VerificationError } from '../src/errors.js';
import type {
  ClaimOutcome,
  ClaimReply,
  ClaimRequest,
  SignEntryResult,
  SignEntryTask,
  TaskProgress,
  WorkerErrorCode,
} from '../src/pipeline/protocol.js';
import { TASK_PROGRESS_INTERVAL_MS } from '../src/pipeline/protocol.js';
import type { AuthenticodeOptions } from '../src/signing/types.js';
import {
  applySignature,
  isPe,
  preparePe,
  signatureWithAuthority,
  type PreparedPe,
} from '../src/signing/authenticode.js';
import { verifyPe } from '../src/signing/verify-pe.js';

/*
 * Compile the codecs' WASM with the optimising tier up front. With V8's default (Liftoff baseline code,
 * tiered up by background compile jobs), two threads that both decode a big entry keep both cores
 * busy, the tier-up jobs starve, and the decode runs in baseline code: measured on the 2-core bench VM,
 * bzip2 decode of xul.dll took 5.4 s instead of 1.2 s. V8 flags are process-wide and piscina refuses
 * them in execArgv, hence setFlagsFromString here, before any codec module is instantiated.
 */
v8.setFlagsFromString('--no-liftoff');

/** The pool's second task (`name: 'checkEntry'`): a passthrough entry's integrity check. */
export { checkEntry } from './check-entry.js';

/** Loaded profiles of this thread, by config sha256 + profile name. */
const profiles = new Map<string, Promise<SigningProfile>>();

function profileFor(task: SignEntryTask): Promise<SigningProfile> {
  const key = `${task.configSha256}\0${task.profile}`;
  let p = profiles.get(key);
  if (!p) {
    p = (async () => {
      const config = await loadConfig(task.configPath);
      if (config.sha256 !== task.configSha256)
        throw new ConfigError(
          'CONFIG_CHANGED' satisfies WorkerErrorCode,
          `${task.configPath} changed while signing (sha256 ${config.sha256}, expected ${task.configSha256})`,
        );
      return loadProfile(config, task.profile);
    })();
    // A failed load is not cached: a fixed passphrase file must work without restarting the pool.
    p.catch(() => profiles.delete(key));
    profiles.set(key, p);
  }
  return p;
}

/**
 * `Piscina.move()` of a bare buffer would lose the metadata; an object implementing the transferable
 * protocol (`transferableSymbol`: what to move, `valueSymbol`: what the caller receives) keeps it.
 */
function movable(result: SignEntryResult, transfer: ArrayBuffer[]): unknown {
  return Piscina.move({ [Piscina.transferableSymbol]: transfer, [Piscina.valueSymbol]: result } as never);
}

/** A buffer that owns its whole ArrayBuffer, so transferring it moves exactly these bytes. */
function owned(b: Uint8Array): Uint8Array {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b;
  const out = Buffer.allocUnsafeSlow(b.byteLength);
  out.set(b);
  return out;
}

/**
 * The signed PE: the signature the main thread hands over for this image digest, or a new one (sent back
 * so others can use it). Without a claim port (canary), always a new one.
 */
async function signed(
  pe: PreparedPe,
  options: AuthenticodeOptions,
  claims: MessagePort | undefined,
): Promise<{ bytes: Uint8Array; made?: { der: Uint8Array; tsa?: string }; tsa?: string }> {
  /** The PE with a signature this task made (`made`: sent back with the result). */
  const made = (m: { der: Uint8Array; tsa?: string }) => ({
    bytes: applySignature(pe, m.der),
    made: m,
    ...(m.tsa ? { tsa: m.tsa } : {}),
  });
  if (!claims) return made(await signatureWithAuthority(pe, options));
  const reply = new Promise<ClaimReply>((resolve) => claims.once('message', resolve));
  claims.postMessage({
    type: 'claim',
    imageDigest: pe.imageDigest.toString('hex'),
    imageLength: pe.imageLength,
  } satisfies ClaimRequest);
  const r = await reply;
  if (r.type === 'fail') throw fromPlainError(r.error);
  if (r.type === 'use') return { bytes: applySignature(pe, r.der), ...(r.tsa ? { tsa: r.tsa } : {}) };
  let outcome: ClaimOutcome;
  try {
    const { der, tsa } = await signatureWithAuthority(pe, options);
    outcome = { type: 'signed', der, ...(tsa ? { tsa } : {}) };
    return made({ der, ...(tsa ? { tsa } : {}) });
  } catch (err) {
    outcome = { type: 'failed', error: toPlainError(err) };
    throw err;
  } finally {
    claims.postMessage(outcome!);
  }
}

/**
 * The task's progress reporter (protocol.ts TaskProgress): codec callbacks in, at most one message per
 * TASK_PROGRESS_INTERVAL_MS out (a clock read per codec window/chunk/block is all it costs otherwise).
 * `pass` 0 = decode (stored bytes consumed), 1 = encode (uncompressed bytes taken in, scaled).
 */
function progressReporter(
  port: MessagePort | undefined,
  stored: number,
): (pass: 0 | 1) => (done: number, total: number) => void {
  let last = performance.now();
  return (pass) => (done, total) => {
    if (!port || total <= 0) return;
    const now = performance.now();
    if (now - last < TASK_PROGRESS_INTERVAL_MS) return;
    last = now;
    const work = pass * stored + Math.min(stored, Math.round((done / total) * stored));
    port.postMessage({ type: 'progress', done: work, total: 2 * stored } satisfies TaskProgress);
  };
}

export default async function signEntry(task: SignEntryTask): Promise<unknown> {
  try {
    const progress = progressReporter(task.claims, task.input.length);
    const profile = await profileFor(task);
    if (!profile.authenticode)
      throw new ConfigError(
        'CONFIG_NO_AUTHENTICODE' satisfies WorkerErrorCode,
        `profile "${task.profile}" has no authenticode section, so it cannot sign ${task.name}`,
      );
    const key = settingsKey(task.codec);

    let t = performance.now();
    // Bounded by the task's cap, the config's limits, and a PE check on the first block (codecs/index.ts).
    const decoded = await decodeForSigning(task.input, {
      name: task.name,
      settings: task.codec,
      maxOutputSize: Math.min(task.maxOutputSize, profile.limits.maxEntrySize),
      maxRatio: profile.limits.maxCompressionRatio,
      onProgress: progress(0),
    });
    const pe = decoded.data;
    const decompressMs = performance.now() - t;
    if (!isPe(pe))
      throw new PolicyError(
        'POLICY_NOT_PE' satisfies WorkerErrorCode,
        `${task.name} matches the signing policy but is not a PE file (${pe.length} bytes, starts ${hexStart(pe)})`,
        { details: { entry: task.name } },
      );

    t = performance.now();
    const prepared = preparePe(pe, profile.authenticode.digest);
    const { bytes: signedPe, made, tsa } = await signed(prepared, profile.authenticode, task.claims);
    const signMs = performance.now() - t;

    t = performance.now();
    const v = await verifyPe(signedPe, {});
    if (!v.signed || !v.digestMatches || !v.signatureValid)
      throw new VerificationError(
        'SIGNED_PE_INVALID' satisfies WorkerErrorCode,
        `${task.name}: the freshly signed PE does not verify (${v.problems.join('; ') || 'no detail'})`,
      );
    const verifyMs = performance.now() - t;

    t = performance.now();
    // bzip2: the blocks the signature did not touch are copied from the input (bz2-blocks.ts).
    const output = owned((await recompressEntry(signedPe, decoded, progress(1))).output);
    // Self-describing streams are read back; a codec the container names (zip's deflate) cannot be.
    const sniffable = task.codec.codec === 'bz2' || task.codec.codec === 'xz';
    const outKey = sniffable ? settingsKey(readSettings(output)) : key;
    if (outKey !== key)
      throw new VerificationError(
        'CODEC_SETTINGS_CHANGED' satisfies WorkerErrorCode,
        `${task.name}: recompressed entry has codec settings ${outKey}, input had ${key}`,
      );
    const compressMs = performance.now() - t;

    return movable(
      {
        ok: true,
        output,
        codecSettings: key,
        decoded: { size: signedPe.length, crc32: crc32(signedPe) },
        decodedSize: pe.length,
        outputSha256: createHash('sha256').update(output).digest('hex'),
        madeSignature: made !== undefined,
        ...(made ? { signature: made } : {}),
        ...(tsa ? { tsa } : {}),
        timings: { decompressMs, signMs, verifyMs, compressMs },
      },
      [output.buffer as ArrayBuffer],
    );
  } catch (err) {
    return { ok: false, error: toPlainError(err) } satisfies SignEntryResult;
  }
}

function hexStart(b: Uint8Array): string {
  return Buffer.from(b.subarray(0, 4)).toString('hex') || '(empty)';
}
