/**
 * Stage 2, resolve: each entry's output bytes. A passthrough entry is its stored bytes (checked in the pool
 * meanwhile, passthrough.ts, unless the run opted out); a signable one comes from the hot entries (a copy
 * from memory, hot.ts), the cache (straight into its slot of an output assembled in memory when the layout is
 * known), from bytes this run produced, or from the single-flight slot of its key, whose work signs it in the
 * pool (produce.ts). The record says what happened here (types.ts `EntryAction`), from the run ledger.
 */
import { performance } from 'node:perf_hooks';
import type { ArchiveEntry, EntryData, OpenedArchive } from '../archive/types.js';
import { namingEntry, toPlainError } from '../errors.js';
import type { FileSource } from '../io/byte-source.js';
import type { Produced, RunLedger, SigningContext } from './context.js';
import { sha256Hex } from './manifest.js';
import type { EntryKey, EntryPlan } from './plan.js';
import { checkPassthrough } from './passthrough.js';
import { cacheLookup, produceEntry } from './produce.js';
import { joinUnlessAborted } from './single-flight.js';
import type { Coordinator, EntryAction, EntryRecord } from './types.js';

/** One locale's inputs to the resolve stage. */
export interface LocaleInput {
  ctx: SigningContext;
  ledger: RunLedger;
  coordinator: Coordinator;
  /** The input path: who this locale is in the run ledger, and where its bytes are. */
  input: string;
  archive: OpenedArchive;
  source: FileSource;
  /** The whole input, when it was read into memory (a locale signed alone). */
  bytes?: Buffer;
  skipInvalid: boolean;
  /** Check passthrough entries before the container is signed (never in a dry run). */
  verifyPassthrough: boolean;
  dryRun: boolean;
  signal?: AbortSignal;
}

export interface EntryOutcome {
  record: EntryRecord;
  data: EntryData;
  /** Recorded in index order, so the manifest does not depend on which entry finished first. */
  warning?: string;
  /**
   * A cache hit handed over before its sha256 was checked (warm assembly): resolves true when the check
   * passed, false when it failed (the entry is then resolved again the ordinary way). The entry is
   * written to the output only after it resolved.
   */
  verified?: Promise<boolean>;
  /**
   * A passthrough entry's check in flight (it sets `record.check` when it passes; rejects with the typed
   * error naming the entry). The assembler awaits every one before the output is finished and signed.
   */
  checked?: Promise<void>;
}

/** An entry's stored bytes in a buffer of their own (transferable to a pool thread). */
export async function storedBytes(l: LocaleInput, entry: ArchiveEntry): Promise<Uint8Array> {
  if (!l.bytes) return l.source.read(entry.offset, entry.size);
  const own = Buffer.allocUnsafeSlow(entry.size);
  own.set(l.bytes.subarray(entry.offset, entry.offset + entry.size));
  return own;
}

/** A view of an entry's stored bytes (no copy when the input is in memory). */
function storedView(l: LocaleInput, entry: ArchiveEntry): Promise<Uint8Array> {
  return l.bytes
    ? Promise.resolve(l.bytes.subarray(entry.offset, entry.offset + entry.size))
    : l.source.read(entry.offset, entry.size);
}

function base(entry: ArchiveEntry): Pick<EntryRecord, 'name' | 'flags' | 'inputSize'> {
  return {
    name: entry.name,
    ...(entry.flags !== undefined ? { flags: entry.flags } : {}),
    inputSize: entry.size,
  };
}

function codecLabel(archive: OpenedArchive, entry: ArchiveEntry, raw: Uint8Array): string {
  try {
    return archive.codecOf(entry, raw).codec;
  } catch {
    return 'unknown';
  }
}

/**
 * Resolve one entry. `slot`: where its bytes go in an output assembled in memory (a cache hit is read
 * straight into it); `speculate`: a verified-later hit may be handed over before its check completes.
 */
export async function resolveEntry(
  l: LocaleInput,
  plan: EntryPlan,
  slot: Buffer | undefined,
  speculate = true,
): Promise<EntryOutcome> {
  const t0 = performance.now();
  const { entry } = plan;
  if (plan.kind === 'passthrough') {
    let raw = await storedView(l, entry);
    if (slot && slot.length === raw.length) {
      slot.set(raw);
      raw = slot;
    }
    const sha = sha256Hex(raw);
    const out: EntryOutcome = {
      record: {
        ...base(entry),
        action: 'passthrough',
        inputSha256: sha,
        codec: codecLabel(l.archive, entry, raw),
        outputSize: raw.length,
        outputSha256: sha,
        check: 'unchecked',
        ms: performance.now() - t0,
      },
      data: { bytes: raw },
    };
    if (l.verifyPassthrough && !l.dryRun) {
      out.checked = checkPassthrough(l, entry, raw, sha).then((c) => {
        out.record.check = c;
      });
      out.checked.catch(() => undefined); // awaited by the assembler
    }
    return out;
  }
  if (plan.kind === 'invalid') return skipInvalid(l, entry, plan.error, t0);
  if (l.dryRun) return dryRunEntry(l, plan, t0);
  return signEntry(l, plan, slot, speculate, t0);
}

async function dryRunEntry(
  l: LocaleInput,
  plan: EntryKey & { entry: ArchiveEntry },
  t0: number,
): Promise<EntryOutcome> {
  const cached = l.ctx.store ? await l.ctx.store.get(plan.key) : undefined;
  return {
    record: {
      ...base(plan.entry),
      action: cached ? 'cached' : 'signed',
      inputSha256: plan.inputSha256,
      codec: plan.codecKey,
      outputSize: cached?.payload.length ?? 0,
      outputSha256: cached?.sha256 ?? '',
      ms: performance.now() - t0,
    },
    data: { bytes: new Uint8Array(0) },
  };
}

async function signEntry(
  l: LocaleInput,
  plan: EntryKey & { entry: ArchiveEntry },
  slot: Buffer | undefined,
  speculate: boolean,
  t0: number,
): Promise<EntryOutcome> {
  const { ctx, ledger } = l;
  const { entry, key } = plan;
  const record = (
    action: EntryAction,
    p: { length: number; sha256: string; tsa?: string | undefined },
  ): EntryRecord => ({
    ...base(entry),
    action,
    inputSha256: plan.inputSha256,
    codec: plan.codecKey,
    outputSize: p.length,
    outputSha256: p.sha256,
    ...(p.tsa ? { tsa: p.tsa } : {}),
    ms: performance.now() - t0,
  });
  let produced: Produced | undefined;
  // An entry this process has read from the cache twice already is copied from memory (hot.ts).
  const hot = slot ? ctx.hot?.take(key, slot) : undefined;
  if (hot) produced = { bytes: hot.bytes, sha256: hot.sha256, ...(hot.facts ? { facts: hot.facts } : {}) };
  // Warm: the entry straight from the cache into its slot, checked on a side thread. Anything
  // unexpected (absent, corrupt, another size) takes the general path below.
  else if (slot && ctx.store?.ranged && !ledger.held(key)) {
    // Without attribution to settle for the key, the entry goes on (written) as soon as its bytes are in
    // place, while a side thread checks them.
    const early = speculate && !ledger.produced(key);
    let landed: () => void = () => undefined;
    const inSlot = new Promise<'landed'>((r) => (landed = () => r('landed')));
    const reading = ctx.store.ranged.readInto(
      key,
      slot,
      (b) => ctx.side.digest(b, 'sha256'),
      early ? landed : undefined,
    );
    reading.catch(() => undefined);
    const first = await Promise.race([inSlot, reading]);
    if (first === 'landed') {
      const out: EntryOutcome = {
        record: record('cached', { length: slot.length, sha256: '' }),
        data: { bytes: slot },
      };
      out.verified = reading.then((got) => {
        if (!got) return false;
        out.record.outputSha256 = got.sha256;
        if (got.facts) out.data.decoded = got.facts;
        ctx.hot?.offer(key, slot, got.sha256, got.facts);
        // Work of this run (a prefetch, another locale) may have put the entry while it was being read:
        // then it was made in this run, not served from an earlier one.
        if (ledger.produced(key)) {
          const attributed = ledger.actionFor(key, l.input);
          out.record.action = attributed.action;
          if (attributed.tsa) out.record.tsa = attributed.tsa;
        }
        count(ctx, out.record.action, slot.length);
        return true;
      });
      out.verified.catch(() => undefined); // awaited by the assembler
      return out;
    }
    if (first) {
      produced = { bytes: slot, sha256: first.sha256, ...(first.facts ? { facts: first.facts } : {}) };
      ctx.hot?.offer(key, slot, first.sha256, first.facts);
    }
  }
  // How this locale got the bytes: its own lookup hit, its own work, or it joined work in flight (which
  // another locale — of this run or another one in this process — started).
  let how: 'lookup' | 'work' | 'joined' = produced ? 'lookup' : 'joined';
  try {
    produced ??=
      ledger.held(key) ??
      (await joinUnlessAborted(
        () =>
          l.coordinator.once<Produced>(
            key,
            async () => {
              const got = await cacheLookup(ctx, key);
              if (got) how = 'lookup';
              return got;
            },
            async () => {
              how = 'work';
              const raw = await storedBytes(l, entry);
              return produceEntry(
                ctx,
                ledger,
                { key, name: entry.name, raw, codec: plan.codec, owner: l.input },
                l.signal,
              );
            },
          ),
        l.signal,
      ));
  } catch (err) {
    return skipInvalid(l, entry, err, t0);
  }
  const attributed = ledger.actionFor(key, l.input);
  const { warning } = attributed;
  // Work in flight that this run's ledger does not know was started by another run in this process.
  const action: EntryAction = how === 'joined' && !ledger.produced(key) ? 'shared' : attributed.action;
  count(ctx, action, produced.bytes.length);
  return {
    ...(warning ? { warning } : {}),
    record: record(action, {
      length: produced.bytes.length,
      sha256: produced.sha256 ?? sha256Hex(produced.bytes),
      tsa: produced.tsa ?? attributed.tsa,
    }),
    data: { bytes: produced.bytes, ...(produced.facts ? { decoded: produced.facts } : {}) },
  };
}

/** The pipeline's counters for one resolved signable entry. */
function count(ctx: SigningContext, action: EntryAction, bytes: number): void {
  if (action === 'signed') ctx.counters.misses++;
  else {
    ctx.counters.hits++;
    ctx.counters.bytesServed += bytes;
  }
}

/**
 * A signable entry that cannot be signed: with `onInvalid: skip` (or `--skip-invalid`) an input problem
 * (not a PE, not decodable) passes the entry through as stored, recorded with the typed error; anything
 * else fails the locale, the error naming the entry.
 */
async function skipInvalid(
  l: LocaleInput,
  entry: ArchiveEntry,
  err: unknown,
  t0: number,
): Promise<EntryOutcome> {
  if (!l.skipInvalid || !isInvalidInput(err)) throw namingEntry(err, entry.name);
  // The stored bytes went to the worker (transferred) or were never read: read them again.
  const raw = await storedView(l, entry);
  const sha = sha256Hex(raw);
  return {
    record: {
      ...base(entry),
      action: 'skipped-invalid',
      inputSha256: sha,
      codec: codecLabel(l.archive, entry, raw),
      outputSize: raw.length,
      outputSha256: sha,
      error: toPlainError(err),
      ms: performance.now() - t0,
    },
    data: { bytes: raw },
  };
}

/** A matched entry that is not a PE (policy), or not a valid compressed stream/PE (format). */
function isInvalidInput(err: unknown): boolean {
  const p = toPlainError(err);
  return p.name === 'PolicyError' || p.name === 'FormatError';
}
