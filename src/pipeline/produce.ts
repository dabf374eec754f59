/**
 * The work behind a cache miss: one pool task signs an entry, the result goes to the cache and the run
 * ledger. While the task runs, this side answers its claim (src/pipeline/protocol.ts): the PE's signature
 * is single-flighted on its own key, so a PE that two entries hold in different stored forms (a zip's
 * deflate and a MAR's xz, two codecs) is signed once — by whichever task claims it first — and the others
 * apply that same signature, giving byte-identical signed PEs.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type { CodecSettings } from '../codecs/types.js';
import { DEFAULT_MAX_OUTPUT_SIZE } from '../codecs/types.js';
import { CodedError, fromPlainError, toPlainError } from '../errors.js';
import type { Produced, RunLedger, SigningContext } from './context.js';
import { peSignatureKey } from './keys.js';
import type { ClaimOutcome, ClaimReply, ClaimRequest, TaskProgress } from './protocol.js';
import { joinUnlessAborted } from './single-flight.js';
import type { PipelineErrorCode } from './types.js';

/** One miss to produce: the entry's key, name (messages), stored bytes (transferred) and codec. */
export interface WorkItem {
  key: string;
  name: string;
  raw: Uint8Array;
  codec: CodecSettings;
  /** The input the work is attributed to (the run ledger's owner). */
  owner: string;
}

/** The cached form of an entry key's result (a hit needs no work). */
export async function cacheLookup(ctx: SigningContext, key: string): Promise<Produced | undefined> {
  const hot = ctx.hot?.take(key);
  if (hot) return { bytes: hot.bytes, sha256: hot.sha256, ...(hot.facts ? { facts: hot.facts } : {}) };
  const got = ctx.store ? await ctx.store.get(key) : undefined;
  if (got) ctx.hot?.offer(key, got.payload, got.sha256, got.facts);
  return got && { bytes: got.payload, sha256: got.sha256, ...(got.facts ? { facts: got.facts } : {}) };
}

/**
 * Sign one entry in the pool and store it. `onPoolDone` runs as soon as the pool task settles (before
 * the cache write), so a scheduler can release the next task.
 */
export async function produceEntry(
  ctx: SigningContext,
  ledger: RunLedger,
  item: WorkItem,
  signal?: AbortSignal,
  onPoolDone?: () => void,
): Promise<Produced> {
  const stored = item.raw.length;
  const task = ledger.work.begin(item.owner);
  const claim = new SignatureClaim(
    ctx,
    ledger,
    (done, total) => ledger.work.update(task, stored, done, total),
    signal,
  );
  let result;
  try {
    result = await ctx.pool.run(
      {
        configPath: ctx.config.path,
        configSha256: ctx.config.sha256,
        profile: ctx.profile.name,
        name: item.name,
        input: item.raw,
        codec: item.codec,
        maxOutputSize: DEFAULT_MAX_OUTPUT_SIZE,
        claims: claim.workerPort,
      },
      signal,
    );
  } catch (err) {
    claim.close(err);
    throw err;
  } finally {
    ledger.work.end(task);
    onPoolDone?.();
  }
  // The entry is done once the signature it made is stored (a later locale or process finds it), not
  // merely sent: the result may overtake the claim port's message, so it carries the signature too.
  await claim.finish(result.signature);
  if (result.madeSignature) ctx.counters.signOperations++;
  const produced: Produced = {
    bytes: result.output,
    sha256: result.outputSha256,
    facts: result.decoded,
    ...(result.tsa ? { tsa: result.tsa } : {}),
  };
  // Recorded (bytes held) before the cache put, so another locale that finds the entry in the cache
  // while the put settles attributes it to this run ('shared'), not to an earlier one ('cached').
  ledger.recordWork(item.key, item.owner, {
    made: result.madeSignature,
    ...(claim.reusedFrom ? { signatureFrom: claim.reusedFrom } : {}),
    produced,
    stored: false,
  });
  // A cache that cannot be written (full disk, read-only) must not fail a correctly signed entry:
  // the locale completes uncached and the manifest says why.
  if (ctx.store)
    await ctx.store.put(item.key, result.output, result.decoded).then(
      () => ledger.stored(item.key),
      (err: unknown) => {
        const p = toPlainError(err);
        produced.warning = `cache put failed for ${item.name}: ${p.code}: ${p.message}`;
        ledger.storeFailed(item.key, produced.warning);
      },
    );
  return produced;
}

/**
 * The main thread's side of one task's claim channel: on the task's `claim`, single-flight on the PE
 * signature key — the first claimant is told to sign and its signature (stored in the cache before the
 * slot settles, so other processes find it) is handed to every other claimant; a signature already in
 * the cache is handed over at once.
 */
class SignatureClaim {
  private readonly channel = new MessageChannel();
  /** Where the signature this task applied came from, when it did not make one. */
  reusedFrom: 'run' | 'cache' | undefined;
  /** The task's claim being answered (and, when it signed, its signature stored); never rejects. */
  private claiming: Promise<void> = Promise.resolve();
  /**
   * Aborted once the task ended (failed, aborted or done): a claim still waiting for another claimant's
   * work (or for a lookup) then neither retries nor becomes the signer — no thread is left to sign.
   */
  private readonly ended = new AbortController();
  private outcome:
    | { resolve: (made: { der: Uint8Array; tsa?: string }) => void; reject: (err: unknown) => void }
    | undefined;

  constructor(
    private readonly ctx: SigningContext,
    private readonly ledger: RunLedger,
    private readonly onProgress: (done: number, total: number) => void,
    /** The task's own abort signal: another task's abort of a signature it was making is not this one's. */
    private readonly signal: AbortSignal | undefined,
  ) {
    this.channel.port1.on('message', (m: ClaimRequest | ClaimOutcome | TaskProgress) => this.onMessage(m));
  }

  get workerPort(): MessagePort {
    return this.channel.port2;
  }

  private reply(r: ClaimReply): void {
    this.channel.port1.postMessage(r);
  }

  private onMessage(m: ClaimRequest | ClaimOutcome | TaskProgress): void {
    if (m.type === 'progress') this.onProgress(m.done, m.total);
    else if (m.type === 'claim') this.claiming = this.onClaim(m);
    else if (m.type === 'signed') this.outcome?.resolve(m);
    else if (m.type === 'failed') this.outcome?.reject(fromPlainError(m.error));
  }

  private async onClaim(m: ClaimRequest): Promise<void> {
    const { ctx } = this;
    let mine = false;
    let key: string;
    try {
      key = peSignatureKey(ctx.profile, m.imageDigest, m.imageLength);
    } catch (err) {
      this.reply({ type: 'fail', error: toPlainError(err) });
      return;
    }
    let fromCache = false;
    try {
      const der = await joinUnlessAborted(
        () =>
          ctx.coordinator.once<Uint8Array>(
            key,
            async () => {
              const got = ctx.store ? await ctx.store.getSignature(key) : undefined;
              if (got) fromCache = true;
              return got;
            },
            async () => {
              if (this.ended.signal.aborted)
                throw new CodedError(
                  'ABORTED' satisfies PipelineErrorCode,
                  'the claiming task ended before it could sign',
                );
              mine = true;
              const made = new Promise<{ der: Uint8Array; tsa?: string }>(
                (resolve, reject) => (this.outcome = { resolve, reject }),
              );
              this.reply({ type: 'sign' });
              const { der, tsa } = await made;
              this.ledger.signatureMade(key, tsa);
              // Stored before the slot settles: a process waiting on the distributed lock then finds it.
              await ctx.store?.putSignature(key, der).catch(() => undefined);
              return der;
            },
          ),
        this.signal ? AbortSignal.any([this.signal, this.ended.signal]) : this.ended.signal,
      );
      if (!mine) {
        this.reusedFrom = fromCache ? this.ledger.signatureSource(key) : 'run';
        const tsa = this.ledger.signatureTsa(key);
        this.reply({ type: 'use', der, ...(tsa ? { tsa } : {}) });
      }
    } catch (err) {
      if (!mine) this.reply({ type: 'fail', error: toPlainError(err) });
    }
  }

  /** The task failed or was aborted: a claim it held must not leave other claimants waiting. */
  close(err: unknown): void {
    this.ended.abort();
    this.outcome?.reject(err);
    this.channel.port1.close();
  }

  /**
   * The task succeeded, with the signature it made (if it made one): settle the claim with it (the
   * port's own message may still be on its way) and wait until the claim is answered and stored.
   */
  async finish(made: { der: Uint8Array; tsa?: string } | undefined): Promise<void> {
    this.ended.abort();
    if (made) this.outcome?.resolve(made);
    this.outcome?.reject(new Error('the signing task ended without reporting its signature'));
    this.channel.port1.close();
    await this.claiming;
  }
}
