/**
 * Cold-run scheduling: plan the cache misses of one or more locales first, then feed them to the pool
 * largest first (longest-processing-time-first), so the slowest entry starts at once and no thread
 * idles at the end while one big entry is still being signed (order: `schedulingOrder`).
 *
 * Each planned miss enters the single-flight coordinator at plan time with a `work` that waits for its
 * turn (a gate), so a locale that meets the key joins that promise instead of signing it out of order.
 * Memory stays bounded: a plan holds only (file, offset, size) per miss; the raw bytes are read when the
 * gate opens, and at most `threads` tasks are released at a time. Results go to the cache; the
 * single-flight promise forgets them once settled.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { cacheKey } from '../../cache/key.js';
import { readSettings, settingsKey } from '../codecs/index.js';
import { readEntryBytes, readMar } from '../formats/mar/index.js';
import type { MarEntry } from '../formats/mar/types.js';
import { BufferSource, FileSource } from '../io/byte-source.js';
import { sha256Hex } from './manifest.js';
import type { LocaleContext } from './locale.js';
import { cacheGet, produceEntry, type Produced } from './locale.js';
import { hashFileSha256, localeOutputKey, outputStoreOf } from './output-cache.js';
import { rangeId } from './input.js';
import { SideHasher } from './side-hash.js';

/** An input up to this size is planned from memory when `PlanOptions.inMemory` asks for it. */
export const IN_MEMORY_INPUT_MAX = 512 * 1024 * 1024;

export interface PlannedMiss {
  key: string;
  input: string;
  entry: MarEntry;
  /** How many planned inputs contain this key (default 1). */
  uses?: number;
  /** Index of the first input that contains it (default 0). */
  inputIndex?: number;
}

/** What planning learnt about one signable entry, so the locale does not read and hash it again. */
export interface EntryKey {
  key: string;
  codec: string;
  inputSha256: string;
}

/** The sha256 of a whole input MAR, with the identity of the file it was taken from. */
export interface InputDigest {
  sha256: string;
  size: number;
  mtimeNs: bigint;
  ino: bigint;
  dev: bigint;
}

export interface Plan {
  /** Unique misses, largest first. */
  misses: PlannedMiss[];
  /** Per input path: entry index → its key (signable entries with readable settings only). */
  keys: Map<string, Map<number, EntryKey>>;
  /**
   * Per input path, when the plan consulted the locale-output tier: the input's digest (so the locale
   * does not hash it again). Inputs whose output the cache holds have no `keys` and no misses.
   */
  inputs?: Map<string, InputDigest>;
}

export interface PlanOptions {
  /**
   * Read each input whole into shared memory (up to IN_MEMORY_INPUT_MAX) and hash its signable entries
   * on this thread and `side` at once; `keep` receives each input's bytes (a locale signed alone
   * then copies its passthrough entries from them instead of reading the file again).
   */
  inMemory?: {
    side: SideHasher;
    keep?: Map<string, Buffer>;
    /** Inputs already read whole, with the entry digests taken while reading (rangeId → sha256). */
    preloaded?: Map<string, { bytes: Buffer; entryDigests?: Map<string, string> }>;
  };
  /**
   * Consult the locale-output tier first: hash each whole input, and leave out of the plan every input
   * whose output the cache holds (`skipInvalid`: the effective onInvalid, part of the output key).
   */
  outputs?: { skipInvalid: boolean };
}

/** A cache store that can tell cheaply (no payload read) whether an entry is present. */
interface HasCapable {
  has(key: string): Promise<boolean>;
}

function canHas(c: unknown): c is HasCapable {
  return typeof (c as Partial<HasCapable> | null)?.has === 'function';
}

/**
 * The unique signable entries of `inputs` whose key the cache does not hold, largest (compressed size)
 * first; ties keep input order. Entries whose settings cannot be read are left to the locale (it
 * decides between failing and `skipped-invalid`).
 */
export async function planMisses(
  ctx: LocaleContext,
  inputs: string[],
  /** Called after each input with its new misses, so signing can start before the plan is complete. */
  onMisses?: (misses: PlannedMiss[]) => void,
  options: PlanOptions = {},
): Promise<Plan> {
  const seen = new Map<string, PlannedMiss | null>();
  const out: PlannedMiss[] = [];
  const keys = new Map<string, Map<number, EntryKey>>();
  const outputStore = options.outputs ? outputStoreOf(ctx.cache) : undefined;
  const digests = outputStore ? new Map<string, InputDigest>() : undefined;
  let scratch = Buffer.alloc(0);
  for (const [inputIndex, input] of inputs.entries()) {
    if (outputStore && digests) {
      try {
        const st = await stat(input, { bigint: true });
        const sha256 = await hashFileSha256(input);
        digests.set(input, { sha256, size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, dev: st.dev });
        const key = localeOutputKey(ctx.profile, ctx.policy, options.outputs!.skipInvalid, sha256);
        if (await outputStore.hasOutput(key)) continue;
      } catch {
        // Unreadable: planned (and failed) below like any input.
      }
    }
    let source: FileSource;
    try {
      source = await FileSource.open(input);
    } catch {
      continue; // the locale reports its own open error
    }
    let fh: FileHandle;
    try {
      fh = await open(input, 'r');
    } catch {
      await source.close();
      continue;
    }
    const mine = new Map<number, EntryKey>();
    keys.set(input, mine);
    const before = out.length;
    const record = async (i: number, entry: MarEntry, codec: string, inputSha256: string): Promise<void> => {
      const key = cacheKey({
        signerFingerprint: ctx.profile.fingerprint,
        codecSettings: codec,
        inputSha256,
      });
      mine.set(i, { key, codec, inputSha256 });
      if (seen.has(key)) {
        const m = seen.get(key);
        if (m && m.input !== input) m.uses = (m.uses ?? 1) + 1;
        return;
      }
      if (ctx.cache && canHas(ctx.cache) && (await ctx.cache.has(key))) {
        seen.set(key, null);
        return;
      }
      const m: PlannedMiss = { key, input, entry, uses: 1, inputIndex };
      seen.set(key, m);
      out.push(m);
    };
    try {
      let whole: Buffer | undefined;
      let known: Map<string, string> | undefined;
      const inMemory = options.inMemory;
      if (inMemory && source.size <= IN_MEMORY_INPUT_MAX) {
        const pre = inMemory.preloaded?.get(input);
        whole = pre?.bytes;
        known = pre?.entryDigests;
        if (whole?.length !== source.size) {
          known = undefined;
          whole = SideHasher.alloc(source.size);
          await readRange(fh, source, whole, { name: '', flags: 0, offset: 0, size: source.size });
        }
        inMemory.keep?.set(input, whole);
      }
      // In memory, the index too comes from those bytes: one snapshot of the input for everything.
      const info = await readMar(whole ? new BufferSource(whole) : source);
      const signable = [...info.entries.entries()].filter(([, e]) => ctx.policy.decide(e.name) === 'sign');
      if (whole && inMemory) {
        const items: { i: number; entry: MarEntry; codec: string; raw: Uint8Array }[] = [];
        for (const [i, entry] of signable) {
          const raw = whole.subarray(entry.offset, entry.offset + entry.size);
          try {
            items.push({ i, entry, raw, codec: settingsKey(await readSettings(raw)) });
          } catch {
            // Left to the locale (fails, or skipped-invalid).
          }
        }
        const todo = items.filter((x) => !known?.has(rangeId(x.entry)));
        const digests = await inMemory.side.sha256All(todo.map((x) => x.raw));
        const got = new Map(todo.map((x, k) => [x, digests[k]!]));
        for (const x of items)
          await record(x.i, x.entry, x.codec, got.get(x) ?? known!.get(rangeId(x.entry))!);
      } else {
        for (const [i, entry] of signable) {
          // One scratch buffer per plan: a fresh 25 MB buffer per entry only feeds the garbage collector.
          if (scratch.length < entry.size) scratch = Buffer.allocUnsafeSlow(entry.size);
          const raw = await readRange(fh, source, scratch, entry);
          let codec: string;
          try {
            codec = settingsKey(await readSettings(raw));
          } catch {
            continue;
          }
          await record(i, entry, codec, sha256Hex(raw));
        }
      }
    } catch {
      // An unreadable MAR fails in its own locale with the typed error.
    } finally {
      await source.close();
      await fh.close();
    }
    // Called even without new misses: `uses` of earlier ones may have changed their order.
    onMisses?.(sortLargestFirst(out.slice(before)));
  }
  return { misses: sortLargestFirst(out), keys, ...(digests ? { inputs: digests } : {}) };
}

/**
 * Scheduling order. Entries shared by several locales gate all of them: largest first (LPT). Entries
 * of one locale only follow in locale order (largest first within a locale), so locales complete one
 * after another and their assembly overlaps the remaining signing instead of all waiting for the
 * last small entry. With a single input this is plain largest-first.
 */
export function schedulingOrder(a: PlannedMiss, b: PlannedMiss): number {
  const sa = (a.uses ?? 1) > 1;
  const sb = (b.uses ?? 1) > 1;
  if (sa !== sb) return sa ? -1 : 1;
  if (!sa && (a.inputIndex ?? 0) !== (b.inputIndex ?? 0)) return (a.inputIndex ?? 0) - (b.inputIndex ?? 0);
  return b.entry.size - a.entry.size;
}

/** Stable sort by `schedulingOrder` (ties keep plan order). */
/** An entry's bytes read into `scratch` (valid until the next call). */
async function readRange(
  fh: FileHandle,
  source: FileSource,
  scratch: Buffer,
  entry: MarEntry,
): Promise<Uint8Array> {
  const view = scratch.subarray(0, entry.size);
  let done = 0;
  while (done < entry.size) {
    const { bytesRead } = await fh.read(view, done, entry.size - done, entry.offset + done);
    if (bytesRead === 0) return readEntryBytes(source, entry); // shrank: the reader reports it typed
    done += bytesRead;
  }
  return view;
}

export function sortLargestFirst(misses: PlannedMiss[]): PlannedMiss[] {
  return [...misses].sort(schedulingOrder);
}

export interface PrefetchHandle {
  /** Plan more misses (e.g. the next locale of a release); unreleased ones are re-sorted largest first. */
  add(more: PlannedMiss[]): void;
  /** Settles when every miss added so far has been signed or has failed (failures surface in the locales). */
  done(): Promise<void>;
}

interface Slot {
  miss: PlannedMiss;
  open: () => void;
  fail: (err: unknown) => void;
  released: boolean;
  settled: boolean;
  freed: boolean;
}

/**
 * Register every planned miss with the coordinator and release them to the pool largest first, at
 * most `maxInFlight` (default: the pool's threads) at a time, so the next-largest entry goes to
 * whichever thread frees first.
 */
export function startPrefetch(
  ctx: LocaleContext,
  planned: PlannedMiss[],
  options: { maxInFlight?: number; signal?: AbortSignal; onSubmit?: (m: PlannedMiss) => void } = {},
): PrefetchHandle {
  const maxInFlight = Math.max(1, options.maxInFlight ?? ctx.pool.threads);
  let slots: Slot[] = [];
  let running = 0;
  const all: Promise<unknown>[] = [];
  const free = (s: Slot): void => {
    if (!s.released || s.freed) return;
    s.freed = true;
    running--;
    releaseMore();
  };
  function releaseMore(): void {
    for (const s of slots) {
      if (running >= maxInFlight || options.signal?.aborted) return;
      if (s.released || s.settled) continue;
      s.released = true;
      running++;
      s.open();
    }
  }
  const register = (m: PlannedMiss): Slot => {
    const slot: Slot = {
      miss: m,
      open: () => undefined,
      fail: () => undefined,
      released: false,
      settled: false,
      freed: false,
    };
    const gate = new Promise<void>((res, rej) => {
      slot.open = res;
      slot.fail = rej;
    });
    gate.catch(() => undefined); // observed by `work`, or never needed (a hit)
    const p = ctx.coordinator.once<Produced>(
      m.key,
      // A hit (another process signed it meanwhile) never takes a pool slot.
      () => (ctx.cache ? cacheGet(ctx.cache, m.key) : Promise.resolve(undefined)),
      async () => {
        await gate;
        try {
          options.onSubmit?.(m);
          const src = await FileSource.open(m.input);
          let raw: Uint8Array;
          try {
            raw = await readEntryBytes(src, m.entry);
          } finally {
            await src.close();
          }
          const produced = await produceEntry(ctx, m.key, m.entry.name, raw, options.signal, () =>
            free(slot),
          );
          ctx.prefetched?.set(m.key, produced.warning ? produced : null);
          return produced;
        } finally {
          free(slot);
        }
      },
    );
    const settle = (): void => {
      slot.settled = true;
      free(slot);
    };
    all.push(p.then(settle, settle));
    return slot;
  };
  const add = (more: PlannedMiss[]): void => {
    if (options.signal?.aborted) return;
    const fresh = more.map(register);
    const order = new Map<Slot, number>();
    slots = [...slots, ...fresh];
    slots.forEach((s, i) => order.set(s, i));
    // `uses` of earlier misses may have grown with this batch: re-sort everything not yet released.
    slots.sort((a, b) => schedulingOrder(a.miss, b.miss) || order.get(a)! - order.get(b)!);
    releaseMore();
  };
  // An aborted run must not leave locales waiting on slots that will never open.
  options.signal?.addEventListener(
    'abort',
    () => {
      for (const s of slots) if (!s.released) s.fail(options.signal!.reason ?? new Error('aborted'));
    },
    { once: true },
  );
  add(planned);
  return { add, done: () => Promise.all(all).then(() => undefined) };
}
