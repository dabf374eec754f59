/**
 * `sign-release --remote` / `enqueue --remote` (docs/ARCHITECTURE.md "Transfer"): sign a release on a
 * `marsign serve` without a shared filesystem, moving only what the server lacks.
 *
 * 1. Ask for the profile (403 `AUTH_PROFILE` before anything is sent; its MAR public keys).
 * 2. Split every input into its recipe (skeleton + entry blobs, src/transfer/recipe.ts), hashing each
 *    entry; ask which blobs the server lacks; upload only those, concurrently, each from where an
 *    interrupted upload stopped.
 * 3. Submit the release by recipe (re-submitting the same release id resumes it), follow its status.
 * 4. For each signed locale: fetch the blobs of its output recipe that the client cache lacks (checked
 *    against their digests), rebuild the output into a temp file beside its final name, check its
 *    sha256 against the server's manifest and its MAR signature against the profile's keys (or pinned
 *    `--mar-cert`s), and only then rename it into place; its manifest beside it, as a local run writes.
 * 5. `release-manifest.json` and `SHA512SUMS`, as `sign-release` writes them.
 */
import { basename, join, relative, resolve, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import { mkdir } from 'node:fs/promises';
import type { BlobStore } from '../../cache/types.js';
import { CodedError, VerificationError, toPlainError } from '../errors.js';
import type { TransferErrorCode } from './errors.js';
import { AtomicFile, writeFileAtomic } from '../io/atomic.js';
import { FileSource } from '../io/byte-source.js';
import { sha512Sums } from '../pipeline/manifest.js';
import { releaseReport, type ReleaseLocaleReport, type ReleaseReport } from '../pipeline/release.js';
import { manifestPath } from '../pipeline/report.js';
import type { LocaleManifest } from '../pipeline/types.js';
import type { LocaleStatus, ReleaseStatus, SubmitResult } from '../queue/types.js';
import type { ResolvedLocale } from '../release/request.js';
import { verifyMar } from '../signing/verify-mar.js';
import type { RemoteClient } from './client.js';
import { encodeRecipe, parseRecipe, rebuild, recipeBlobs, sha256Hex, splitContainer } from './recipe.js';

export interface TransferProgress {
  phase: 'splitting' | 'uploading' | 'signing' | 'done';
  bytesUp: number;
  bytesUpTotal: number;
  localesDone: number;
  localesTotal: number;
  bytesDown: number;
}

/** What moved, for the summary and the benchmark (blob bytes: the wire adds HTTP framing). */
export interface TransferTotals {
  blobs: number;
  blobsUploaded: number;
  bytesUp: number;
  /** Bytes of blobs the server already held (not sent). */
  bytesSkipped: number;
  blobsDownloaded: number;
  bytesDown: number;
  /** Output blobs served by the client cache instead. */
  blobsFromCache: number;
  transport: string;
  marKeys: 'pinned' | 'server' | 'none';
}

export interface RemoteReleaseOptions {
  client: RemoteClient;
  release: string;
  profile: string;
  source: string;
  locales: ResolvedLocale[];
  outDir: string;
  /** sign-release: fetch the outputs (true); enqueue: submit (and maybe wait) only. */
  download: boolean;
  wait: boolean;
  /** The client's blob cache (null: keep nothing between runs). */
  cache: BlobStore | null;
  /** Pinned MAR certificates/keys (paths or PEM): checked instead of the keys the server reports. */
  marCerts?: string[];
  /** Requests in flight at once (default 16). */
  parallel?: number;
  /** The longest wait between status polls (default 500 ms; 100 ms right after a locale finished). */
  pollMs?: number;
  onProgress?: (p: TransferProgress) => void;
  signal?: AbortSignal;
}

export interface RemoteReleaseResult {
  submitted: SubmitResult;
  status?: ReleaseStatus;
  report?: ReleaseReport;
  transfer: TransferTotals;
}

interface PreparedLocale {
  l: ResolvedLocale;
  recipeSha: string;
  recipeBytes: Uint8Array;
  skeleton: Uint8Array;
  entries: { sha256: string; offset: number; size: number }[];
}

type BlobSource = { path: string; offset: number; size: number } | { bytes: Uint8Array };

/**
 * Status polls: 100 ms after a locale finished (they finish in bursts), doubling while none does, up to
 * `pollMs` (default 500 ms: a quiet spell never delays noticing a finished locale more than before).
 */
const MIN_POLL_MS = 100;
const MAX_POLL_MS = 500;

/** The next wait between status polls. */
export function nextPollWait(previous: number, changed: boolean, cap = MAX_POLL_MS): number {
  return changed ? Math.min(MIN_POLL_MS, cap) : Math.min(previous * 2, cap);
}

/** Run `fn` over `items`, `limit` at a time; the first error stops the rest and is thrown. */
async function mapLimit<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const run = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const t = items[next++]!;
      try {
        await fn(t);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  if (failed !== undefined) throw failed;
}

export async function remoteRelease(o: RemoteReleaseOptions): Promise<RemoteReleaseResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const parallel = o.parallel ?? 16;
  const { client } = o;
  const progress: TransferProgress = {
    phase: 'splitting',
    bytesUp: 0,
    bytesUpTotal: 0,
    localesDone: 0,
    localesTotal: o.locales.length,
    bytesDown: 0,
  };
  const tick = () => o.onProgress?.({ ...progress });
  const totals: TransferTotals = {
    blobs: 0,
    blobsUploaded: 0,
    bytesUp: 0,
    bytesSkipped: 0,
    blobsDownloaded: 0,
    bytesDown: 0,
    blobsFromCache: 0,
    transport: client.transport.kind,
    marKeys: o.marCerts?.length ? 'pinned' : 'server',
  };

  // 1. The profile first: a client without scope for it is refused before anything is sent.
  let info = await client.profile(o.profile);

  // 2. Split, ask, upload what is missing.
  const prepared: PreparedLocale[] = [];
  const sources = new Map<string, BlobSource>();
  for (const l of o.locales) {
    const src = await FileSource.open(l.input);
    try {
      const { recipe, skeleton } = await splitContainer(src, l.input);
      const recipeBytes = encodeRecipe(recipe);
      const recipeSha = sha256Hex(recipeBytes);
      prepared.push({ l, recipeSha, recipeBytes, skeleton, entries: recipe.entries });
      sources.set(recipeSha, { bytes: recipeBytes });
      sources.set(recipe.skeleton.sha256, { bytes: skeleton });
      for (const e of recipe.entries)
        if (!sources.has(e.sha256)) sources.set(e.sha256, { path: l.input, offset: e.offset, size: e.size });
    } finally {
      await src.close();
    }
    o.signal?.throwIfAborted();
  }
  const all = [...sources].map(([sha256, s]) => ({ sha256, size: 'bytes' in s ? s.bytes.length : s.size }));
  totals.blobs = all.length;
  const missing = await client.missing(all);
  const total = all.reduce((n, b) => n + b.size, 0);
  progress.phase = 'uploading';
  progress.bytesUpTotal = missing.reduce((n, m) => n + m.size - m.offset, 0);
  totals.bytesSkipped = total - progress.bytesUpTotal;
  tick();
  // Largest first: the long uploads start early and the small ones fill in around them.
  missing.sort((a, b) => b.size - a.size);
  await mapLimit(missing, parallel, async (m) => {
    o.signal?.throwIfAborted();
    const s = sources.get(m.sha256)!;
    let bytes: Uint8Array;
    if ('bytes' in s) bytes = s.bytes;
    else {
      const f = await FileSource.open(s.path);
      try {
        bytes = await f.read(s.offset, s.size);
      } finally {
        await f.close();
      }
    }
    if (sha256Hex(bytes) !== m.sha256)
      throw new CodedError(
        'INPUT_CHANGED' satisfies TransferErrorCode,
        `an input changed while it was being sent (blob ${m.sha256})`,
      );
    const { sent } = await client.upload(m.sha256, bytes, m.offset);
    totals.blobsUploaded++;
    totals.bytesUp += sent;
    progress.bytesUp += m.size - m.offset;
    tick();
  });

  // 3. Submit by recipe.
  const submitted = await client.submit({
    release: o.release,
    profile: o.profile,
    locales: Object.fromEntries(
      prepared.map((p) => [p.l.locale, { recipe: p.recipeSha, name: basename(p.l.input) }]),
    ),
  });
  progress.phase = 'signing';
  tick();
  if (!o.wait && !o.download) return { submitted, transfer: totals };

  // 4. Follow the release; fetch each locale's output as soon as it is signed.
  const byLocale = new Map(prepared.map((p) => [p.l.locale, p]));
  const reports = new Map<string, ReleaseLocaleReport>();
  const inflight = new Map<string, Promise<Uint8Array>>();
  const fetchBlob = (sha256: string, size?: number): Promise<Uint8Array> => {
    let p = inflight.get(sha256);
    if (!p) {
      p = (async () => {
        const cached = await o.cache?.getBlob(sha256);
        if (cached) {
          totals.blobsFromCache++;
          return cached;
        }
        // Ranged and resumable into the client cache when the size is known (entries, skeletons).
        const b = await client.blob(sha256, {
          ...(size !== undefined ? { size } : {}),
          cache: o.cache,
          onBytes: (n) => {
            totals.bytesDown += n;
            progress.bytesDown += n;
          },
        });
        totals.blobsDownloaded++;
        tick();
        if (size === undefined) await o.cache?.putBlob(sha256, b);
        return b;
      })();
      p.catch(() => undefined);
      inflight.set(sha256, p);
      // With a cache, a finished blob is read from it again; without, kept for this run.
      const done = () => {
        if (o.cache) inflight.delete(sha256);
      };
      p.then(done, done);
    }
    return p;
  };
  const downloads: Promise<void>[] = [];
  let status: ReleaseStatus | undefined;
  const started_ = new Set<string>();
  let pollWait = Math.min(MIN_POLL_MS, o.pollMs ?? MIN_POLL_MS);
  for (;;) {
    o.signal?.throwIfAborted();
    const before = started_.size;
    status = await client.status(o.release);
    for (const ls of status.locales) {
      if (started_.has(ls.locale)) continue;
      if (ls.state === 'completed' || ls.state === 'failed') {
        started_.add(ls.locale);
        const p = byLocale.get(ls.locale);
        if (!p) continue;
        if (!o.download || ls.state === 'failed') {
          reports.set(ls.locale, failedOrDone(p.l, ls));
          progress.localesDone++;
          tick();
          continue;
        }
        downloads.push(
          fetchLocale(o, p.l, ls, fetchBlob, () => info).then(
            (r) => {
              reports.set(ls.locale, r);
              progress.localesDone++;
              tick();
            },
            (err: unknown) => {
              reports.set(ls.locale, {
                locale: p.l.locale,
                input: p.l.input,
                output: p.l.output,
                ok: false,
                error: toPlainError(err),
              });
              progress.localesDone++;
              tick();
            },
          ),
        );
      }
    }
    if (status.state === 'completed' || status.state === 'failed') {
      // Keys may have been published only once a worker ran the profile.
      if (!info.mar && !o.marCerts?.length) info = await client.profile(o.profile).catch(() => info);
      if (started_.size >= status.locales.length) break;
    }
    // Soon after a change (locales finish in bursts), backing off while nothing moves.
    pollWait = nextPollWait(pollWait, started_.size > before, o.pollMs);
    await new Promise((r) => setTimeout(r, pollWait));
  }
  await Promise.all(downloads);
  progress.phase = 'done';
  tick();
  if (!o.download) return { submitted, status, transfer: totals };

  const results = o.locales.map(
    (l) =>
      reports.get(l.locale) ?? {
        locale: l.locale,
        input: l.input,
        output: l.output,
        ok: false,
        error: {
          name: 'UsageError',
          code: 'REMOTE_LOCALE_MISSING' satisfies TransferErrorCode,
          message: `the server reported nothing for locale ${l.locale}`,
        },
      },
  );
  const outDir = resolve(o.outDir);
  await mkdir(outDir, { recursive: true });
  const report = releaseReport(o, outDir, results, startedAt, performance.now() - started);
  if (totals.marKeys !== 'pinned' && !info.mar) totals.marKeys = 'none';
  await writeFileAtomic(join(outDir, 'release-manifest.json'), JSON.stringify(report, null, 2) + '\n');
  const rows = results
    .filter((r) => r.ok && r.outputSha512)
    .map((r) => ({ sha512: r.outputSha512!, relPath: relative(outDir, r.output).split(sep).join('/') }));
  await writeFileAtomic(join(outDir, 'SHA512SUMS'), sha512Sums(rows));
  return { submitted, status, report, transfer: totals };
}

function failedOrDone(l: ResolvedLocale, ls: LocaleStatus): ReleaseLocaleReport {
  return {
    locale: l.locale,
    input: l.input,
    output: l.output,
    ok: ls.state === 'completed',
    ...(ls.error ? { error: ls.error } : {}),
    ...(ls.result?.outputSha256 ? { outputSha256: ls.result.outputSha256 } : {}),
    ...(ls.durationMs !== undefined ? { ms: ls.durationMs } : {}),
  };
}

/** Fetch, rebuild, check and place one signed locale; its manifest beside it. */
async function fetchLocale(
  o: RemoteReleaseOptions,
  l: ResolvedLocale,
  ls: LocaleStatus,
  fetchBlob: (sha256: string, size?: number) => Promise<Uint8Array>,
  profile: () => { mar: { publicKeys: string[] } | null },
): Promise<ReleaseLocaleReport> {
  const t = performance.now();
  const r = ls.result;
  if (!r?.outputRecipe || !r.manifestBlob || !r.outputSha256)
    throw new CodedError(
      'REMOTE_NO_OUTPUT' satisfies TransferErrorCode,
      `locale ${l.locale}: the server's result names no output recipe`,
    );
  const recipe = parseRecipe(await fetchBlob(r.outputRecipe), `locale ${l.locale} output recipe`);
  if (recipe.sha256 !== r.outputSha256)
    throw new VerificationError(
      'REMOTE_OUTPUT_MISMATCH' satisfies TransferErrorCode,
      `locale ${l.locale}: the output recipe describes ${recipe.sha256}, the server's manifest says ${r.outputSha256}`,
    );
  const manifest = JSON.parse(
    Buffer.from(await fetchBlob(r.manifestBlob)).toString('utf8'),
  ) as LocaleManifest;
  if ((manifest.outputSha256 ?? manifest.output_sha256) !== r.outputSha256)
    throw new VerificationError(
      'REMOTE_OUTPUT_MISMATCH' satisfies TransferErrorCode,
      `locale ${l.locale}: the manifest blob names another output`,
    );
  // Every piece fetched at once (each request one round trip), then the file assembled in order.
  const pieces = new Map<string, Uint8Array>();
  await mapLimit(recipeBlobs(recipe), o.parallel ?? 16, async (b) => {
    pieces.set(b.sha256, await fetchBlob(b.sha256, b.size));
  });
  await mkdir(l.outputDir, { recursive: true });
  const f = await AtomicFile.create(l.output);
  try {
    await rebuild(
      recipe,
      async (sha256) => pieces.get(sha256)!,
      (bytes, position) => f.write(bytes, position),
      // fetchBlob's pieces were checked against their digests (client cache reads, checked downloads).
      { verified: true },
    );
    pieces.clear();
    if (recipe.container === 'mar') {
      const keys = o.marCerts?.length
        ? o.marCerts
        : (profile().mar?.publicKeys.map((k) => new Uint8Array(Buffer.from(k, 'base64'))) ?? []);
      if (keys.length > 0) {
        await f.handle.sync();
        const v = await verifyMar(f.tempPath, keys);
        if (!v.valid)
          throw new VerificationError(
            'REMOTE_OUTPUT_SIGNATURE' satisfies TransferErrorCode,
            `locale ${l.locale}: the signed output's MAR signature does not verify: ${v.problems.join('; ')}`,
          );
      }
    }
    await f.commit();
  } catch (e) {
    await f.abort();
    throw e;
  }
  const local: LocaleManifest = { ...manifest, input: l.input, output: l.output };
  await writeFileAtomic(manifestPath(l.output), JSON.stringify(local, null, 2) + '\n');
  return {
    locale: l.locale,
    input: l.input,
    output: l.output,
    manifest: manifestPath(l.output),
    ok: true,
    outputSha256: r.outputSha256,
    ...((manifest.outputSha512 ?? manifest.output_sha512)
      ? { outputSha512: (manifest.outputSha512 ?? manifest.output_sha512)! }
      : {}),
    ...(manifest.outputSize !== undefined ? { outputSize: manifest.outputSize } : {}),
    totals: manifest.totals,
    ...(manifest.outputCache ? { outputCache: manifest.outputCache } : {}),
    ...(manifest.warnings?.length ? { warnings: manifest.warnings.length } : {}),
    ms: (ls.durationMs ?? 0) + (performance.now() - t),
  };
}
