/**
 * One locale through the stages (docs/ARCHITECTURE.md "Pipeline"): read → (output tier) → plan →
 * resolve + assemble → finish → report. Each stage is a module with typed inputs and outputs; this file
 * only wires them: the input's snapshot and the served-whole shortcut, the writer, the layout
 * prediction, and cleanup on every exit path.
 */
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { detectContainer, openArchive } from '../archive/registry.js';
import type { OutputCacheStore } from '../../cache/types.js';
import type { OpenedArchive, PredictedLayout } from '../archive/types.js';
import type { LocaleAuditRun } from '../audit/types.js';
import { toPlainError, UsageError } from '../errors.js';
import { BufferSource, FileSource, type ByteSource } from '../io/byte-source.js';
import type { Confinement } from '../io/confine.js';
import { assemble, type Assembly } from './assemble.js';
import type { RunLedger, SigningContext } from './context.js';
import type { SharedLease } from './budget.js';
import { finish, type Finished } from './finish.js';
import { readInput, type InputSnapshot } from './input.js';
import { localeOutputKey } from './keys.js';
import { encodeOutputMeta, hashFileSha256, serveOutput } from './output-cache.js';
import {
  identityOf,
  keysInMemory,
  planEntries,
  sameFile,
  signableEntries,
  sortForScheduling,
  type EntryPlan,
  type PlannedInput,
  type PlannedMiss,
  type ReleasePlan,
} from './plan.js';
import { buildManifest, writeManifest } from './report.js';
import type { LocaleInput } from './resolve.js';
import { startScheduler } from './schedule.js';
import type { Coordinator, LocaleManifest, LocaleProgress, LocaleStage, PipelineErrorCode } from './types.js';

export interface SignLocaleOptions {
  profile: string;
  input: string;
  output: string;
  dryRun?: boolean;
  skipInvalid?: boolean;
  /**
   * Check every passthrough entry (decode, CRC) before the container is signed (passthrough.ts). Default:
   * the policy's `verifyPassthrough` (true); false = `--no-verify-passthrough`. Never in a dry run.
   */
  verifyPassthrough?: boolean;
  onProgress?: (p: LocaleProgress) => void;
  signal?: AbortSignal;
  coordinator?: Coordinator;
  /** Default true: write `<output>.manifest.json`. */
  writeManifest?: boolean;
  /**
   * Use the locale-output tier (serve a stored output of the same input and settings; store this one
   * after signing). Default: the pipeline's (config `cache.outputs`, default true). Never in a dry run.
   */
  outputCache?: boolean;
  /**
   * The release's plan (keys of every input, misses already scheduled). Without one, a non-dry run
   * plans this locale itself and schedules its misses largest first.
   */
  plan?: ReleasePlan;
  /**
   * Open the input and write the output, temp files and manifest only inside these roots, following no
   * link (the queue worker's open-time confinement, src/io/confine.ts). Absent: paths as given.
   */
  confine?: Confinement;
  /** Who and what this locale is, for its audit records (release id, locale code, API client). */
  release?: string;
  locale?: string;
  client?: string;
}

export async function signLocale(
  ctx: SigningContext,
  ledger: RunLedger,
  options: SignLocaleOptions,
): Promise<LocaleManifest> {
  const stages = new StageReporter(options.onProgress);
  const opts: SignLocaleOptions = stages.wrap(options);
  stages.stage('planning');
  const started = performance.now();
  const startedAt = new Date().toISOString();
  if (!opts.dryRun && resolve(opts.output) === resolve(opts.input))
    throw new UsageError(
      'OUTPUT_IS_INPUT' satisfies PipelineErrorCode,
      `output ${opts.output} is the input file; write elsewhere`,
    );
  const tier =
    !opts.dryRun && (opts.outputCache ?? ctx.outputTier) ? (ctx.store?.outputs ?? undefined) : undefined;
  // An audit sink that cannot take records refuses the locale before any work (the service's backlog).
  const audit = opts.dryRun ? undefined : ctx.audit;
  await audit?.ready?.();
  const confine = opts.confine;
  const source = confine ? await confine.openInput(opts.input) : await FileSource.open(opts.input);
  // Buffers leased from the pipeline's memory budget (the input snapshot, the output), released at the
  // end once nothing (the side thread's hashing, the output tier's store) still reads them.
  const held: SharedLease[] = [];
  let failed = false;
  const settling: Promise<unknown>[] = [];
  try {
    let planned = opts.plan?.inputs.get(opts.input);
    if (planned && !sameFile(planned.identity, await identityOf(opts.input))) planned = undefined;
    // A locale signed alone reads its input whole, once, into shared memory, hashing it as it comes in —
    // when the budget has room for it; else it is read from the file entry by entry.
    const snapLease = !opts.dryRun && !opts.plan ? ctx.budget.trySharedBuffer(source.size) : undefined;
    if (snapLease) held.push(snapLease);
    const snapshot = snapLease ? await snapshotOf(ctx, source, tier !== undefined, snapLease) : undefined;
    const bytes = snapshot ? new BufferSource(snapshot.bytes) : source;
    const skipInvalid = opts.skipInvalid === true || ctx.policy.onInvalid === 'skip';
    const verifyPassthrough = opts.verifyPassthrough ?? ctx.policy.verifyPassthrough;
    let outputKey: string | undefined;
    // The whole input's sha256: the output tier's key, and the audit record's input digest (taken from
    // the snapshot on the side thread meanwhile, or from the file at the end, when the tier is off).
    let inputSha256: string | Promise<string> | undefined = planned?.sha256 ?? snapshot?.sha256;
    if (tier) {
      const sha256 = (inputSha256 as string | undefined) ?? (await hashFileSha256(source.reopenPath));
      inputSha256 = sha256;
      outputKey = localeOutputKey(ctx.profile, ctx.policy, { skipInvalid, verifyPassthrough }, sha256);
    } else if (audit && !inputSha256 && snapshot) {
      inputSha256 = ctx.side.digest(snapshot.bytes, 'sha256');
      settling.push(inputSha256);
    }
    // A release plan that planned this input for signing has scheduled its work already, attributed to
    // it: serving it whole now (another process stored it meanwhile) would leave that work unrecorded.
    if (tier && outputKey && !planned?.keys) {
      const t = { started, startedAt, verifyPassthrough };
      const served = await serveWhole(ctx, opts, tier, outputKey, bytes, t);
      if (served) {
        await audit?.locale(auditRun(ctx, opts, served, inputSha256 as string));
        return served;
      }
    }
    const archive = await openArchive(bytes, opts.input);
    const l: LocaleInput = {
      ctx,
      ledger,
      coordinator: opts.coordinator ?? ctx.coordinator,
      input: opts.input,
      archive,
      source,
      ...(snapshot ? { bytes: snapshot.bytes } : {}),
      skipInvalid,
      verifyPassthrough: verifyPassthrough && opts.dryRun !== true,
      dryRun: opts.dryRun === true,
      ...(opts.signal ? { signal: opts.signal } : {}),
    };
    const plans = await planLocale(l, planned, snapshot);
    const planMs = performance.now() - started;
    const { assembly, finished, signMs, writeMs } = await writeOutput(l, plans, opts, held, settling, () =>
      stages.stage('writing'),
    );
    const stored =
      tier && outputKey && finished?.bytes
        ? storeOutput(tier, outputKey, finished, assembly, opts.output)
        : undefined;
    if (stored) settling.push(stored);
    const digests = finished && {
      sha256: finished.sha256,
      sha512: await finished.sha512,
      size: finished.size,
    };
    const manifest = buildManifest({
      input: opts.input,
      output: opts.output,
      container: archive.format,
      profile: ctx.profile.name,
      dryRun: l.dryRun,
      verifyPassthrough: l.verifyPassthrough,
      ...(digests ? { digests } : {}),
      ...(tier ? { outputCache: 'miss' as const } : {}),
      records: assembly.records,
      warnings: assembly.warnings,
      inputBytes: source.size,
      timings: { startedAt, ms: performance.now() - started, planMs, signMs, writeMs },
    });
    await report(manifest, !l.dryRun && opts.writeManifest !== false, stored, confine);
    stages.stage('done');
    if (audit)
      await audit.locale(
        auditRun(ctx, opts, manifest, await (inputSha256 ?? hashFileSha256(source.reopenPath))),
      );
    return manifest;
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await Promise.allSettled(settling);
    // A failed or aborted locale may leave pool tasks and side-thread digests reading its buffers (a
    // passthrough check, a hit's verification still in flight): their bytes go back, the buffers are
    // never handed to another locale.
    for (const lease of held)
      if (failed) lease.discard();
      else lease.release();
    await source.close();
  }
}

/** The whole output from the locale-output tier (counted), or undefined on a miss. */
async function serveWhole(
  ctx: SigningContext,
  opts: SignLocaleOptions,
  tier: OutputCacheStore,
  key: string,
  bytes: ByteSource,
  t: { started: number; startedAt: string; verifyPassthrough: boolean },
): Promise<LocaleManifest | undefined> {
  const served = await serveOutput({
    store: tier,
    key,
    input: opts.input,
    output: opts.output,
    container: await detectContainer(bytes, opts.input),
    profile: ctx.profile.name,
    inputSize: bytes.size,
    started: t.started,
    startedAt: t.startedAt,
    planMs: performance.now() - t.started,
    writeManifest: opts.writeManifest !== false,
    verifyPassthrough: t.verifyPassthrough,
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.confine ? { confine: opts.confine } : {}),
  });
  if (!served) {
    ctx.counters.outputMisses++;
    return undefined;
  }
  ctx.counters.outputHits++;
  ctx.counters.hits += served.manifest.totals.hits;
  ctx.counters.bytesServed += served.hit.size;
  return served.manifest;
}

/**
 * Stages 2–4: resolve and assemble every entry into the container writer (in memory too when the layout
 * is predicted), then finish the output. A dry run only resolves. The writer is aborted on any failure.
 */
async function writeOutput(
  l: LocaleInput,
  plans: EntryPlan[],
  opts: SignLocaleOptions,
  held: SharedLease[],
  settling: Promise<unknown>[],
  onAssembled: () => void,
): Promise<{ assembly: Assembly; finished?: Finished; signMs: number; writeMs: number }> {
  const t0 = performance.now();
  if (l.dryRun) {
    const assembly = await assemble(l, plans, {}, opts.onProgress);
    onAssembled();
    return { assembly, signMs: performance.now() - t0, writeMs: 0 };
  }
  const signing = l.ctx.profile.mar ? { mar: l.ctx.profile.mar } : {};
  const writer = await l.archive.createWriter(
    opts.output,
    signing,
    opts.confine ? { confine: opts.confine } : {},
  );
  try {
    const layout = await predict(l, plans, signing);
    // A predicted output is assembled in memory too when the budget has room (no read-back to sign it).
    const lease = layout ? l.ctx.budget.trySharedBuffer(layout.fileSize) : undefined;
    if (lease) held.push(lease);
    const target = { writer, ...(layout ? { layout } : {}), ...(lease ? { buffer: lease.buffer } : {}) };
    const assembly = await assemble(l, plans, target, opts.onProgress);
    onAssembled();
    const t1 = performance.now();
    const finished = await finish(writer, opts.output, assembly, layout, lease, l.ctx);
    if (finished.lease && finished.lease !== lease) held.push(finished.lease);
    settling.push(finished.sha512);
    return { assembly, finished, signMs: t1 - t0, writeMs: performance.now() - t1 };
  } catch (err) {
    await writer.abort().catch(() => undefined);
    throw err;
  }
}

/** What the audit sink is told about a produced locale. */
function auditRun(
  ctx: SigningContext,
  opts: SignLocaleOptions,
  manifest: LocaleManifest,
  inputSha256: string,
): LocaleAuditRun {
  return {
    profile: ctx.profile,
    manifest,
    inputSha256,
    ...(opts.release !== undefined ? { release: opts.release } : {}),
    ...(opts.locale !== undefined ? { locale: opts.locale } : {}),
    ...(opts.client !== undefined ? { client: opts.client } : {}),
  };
}

/**
 * The input read whole into shared memory: with the output tier, hashed whole on this thread for its
 * key (its entries are hashed only after a miss: hashing them on a side thread meanwhile slowed the
 * reads, and so a hit, on 2 cores); without, its signable entries hashed as they come in.
 */
async function snapshotOf(
  ctx: SigningContext,
  source: FileSource,
  whole: boolean,
  into: SharedLease,
): Promise<InputSnapshot> {
  const ranges = whole
    ? []
    : signableEntries(ctx, await openArchive(source, source.path)).map((e) => ({
        offset: e.offset,
        size: e.size,
      }));
  // reopenPath: the file this source opened (a confined input's descriptor), not what its path names now.
  return readInput(source.reopenPath, into.buffer, { whole, ranges, side: ctx.side });
}

/**
 * Every entry's plan: from the release plan's keys when it planned this file, else from the snapshot
 * (hashed on two threads) or the file. A locale planned here schedules its own misses largest first.
 */
async function planLocale(
  l: LocaleInput,
  planned: PlannedInput | undefined,
  snapshot: InputSnapshot | undefined,
): Promise<EntryPlan[]> {
  const { ctx, archive } = l;
  const known =
    planned?.keys ??
    (snapshot && !l.dryRun
      ? await keysInMemory(ctx, archive, snapshot.bytes, ctx.side, snapshot.entryDigests)
      : undefined);
  const plans = await planEntries(ctx, archive, known, (e) => l.source.read(e.offset, e.size));
  if (!l.dryRun && !planned?.keys && l.coordinator.local) {
    const misses = await missesOf(l, plans);
    if (misses.length > 0) startScheduler(ctx, l.ledger, misses, l.signal ? { signal: l.signal } : {});
  }
  return plans;
}

/** The unique signable keys of one locale that the cache lacks, largest first. */
async function missesOf(l: LocaleInput, plans: EntryPlan[]): Promise<PlannedMiss[]> {
  const seen = new Set<string>();
  const out: PlannedMiss[] = [];
  for (const p of plans) {
    if (p.kind !== 'sign' || seen.has(p.key)) continue;
    seen.add(p.key);
    if (l.ctx.store?.presence && (await l.ctx.store.presence.has(p.key))) continue;
    out.push({ key: p.key, input: l.input, entry: p.entry, codec: p.codec });
  }
  return sortForScheduling(out);
}

/**
 * The output's layout when every entry's stored size is known before writing: passthrough entries keep
 * theirs, signable ones are hot entries or planned hits whose size the cache tells without reading.
 * Undefined otherwise.
 */
async function predict(
  l: LocaleInput,
  plans: EntryPlan[],
  signing: Parameters<OpenedArchive['predictLayout']>[1],
): Promise<PredictedLayout | undefined> {
  const presence = l.ctx.store?.presence;
  if (!presence) return undefined;
  const sizes: number[] = [];
  for (const p of plans) {
    if (p.kind === 'passthrough') sizes.push(p.entry.size);
    else if (p.kind === 'invalid') return undefined;
    else {
      // A hot entry (hot.ts) is what the locale will be given: its size first (no look at the store).
      const size = l.ctx.hot?.size(p.key) ?? (await presence.payloadSize(p.key));
      if (size === undefined) return undefined;
      sizes.push(size);
    }
  }
  return l.archive.predictLayout(sizes, signing);
}

/**
 * Store the committed output for the next run of the same input (its sha512 goes into the header last,
 * once a side thread has it). The store may hard-link the committed file instead of writing the bytes
 * again. A failure is a warning, never a failed locale.
 */
function storeOutput(
  tier: OutputCacheStore,
  key: string,
  finished: Finished,
  assembly: Assembly,
  output: string,
): Promise<string | undefined> {
  return tier
    .putOutput(
      key,
      finished.bytes!,
      { sha256: finished.sha256, sha512: finished.sha512, meta: encodeOutputMeta(assembly.records) },
      { linkFrom: output },
    )
    .then(
      () => undefined,
      (err: unknown) => {
        const p = toPlainError(err);
        return `output cache put failed: ${p.code}: ${p.message}`;
      },
    );
}

/** Write the manifest while the output is being stored; a failed store (rare) rewrites it with the warning. */
async function report(
  manifest: LocaleManifest,
  toDisk: boolean,
  stored: Promise<string | undefined> | undefined,
  confine: Confinement | undefined,
): Promise<void> {
  const [, warning] = await Promise.all([toDisk ? writeManifest(manifest, confine) : undefined, stored]);
  if (!warning) return;
  manifest.warnings = [...(manifest.warnings ?? []), warning];
  if (toDisk) await writeManifest(manifest, confine);
}

/**
 * The locale's stage changes, told through `onProgress` with the last figures it carried (zeros
 * before the first): `planning` at the start, `writing` once every entry is assembled, `done` at the end.
 */
class StageReporter {
  private last: LocaleProgress = {
    stage: 'planning',
    entriesDone: 0,
    entriesTotal: 0,
    bytesDone: 0,
    bytesTotal: 0,
    workBytesDone: 0,
    hits: 0,
    misses: 0,
    passthrough: 0,
  };

  private told = false;

  constructor(private readonly onProgress: ((p: LocaleProgress) => void) | undefined) {}

  /** `opts` with an onProgress that remembers what it last told. */
  wrap(opts: SignLocaleOptions): SignLocaleOptions {
    const to = this.onProgress;
    if (!to) return opts;
    return {
      ...opts,
      onProgress: (p) => {
        this.last = p;
        this.told = true;
        to(p);
      },
    };
  }

  stage(stage: LocaleStage): void {
    if (!this.onProgress || (this.told && this.last.stage === stage)) return;
    this.told = true;
    this.last = { ...this.last, stage, ...(stage === 'signing' ? {} : { workBytesDone: 0 }) };
    this.onProgress({ ...this.last });
  }
}
