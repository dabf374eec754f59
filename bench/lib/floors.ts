/**
 * Lower bounds ("floors") the release benchmark compares the pipeline with:
 * - disk: read every input MAR and write the same number of bytes to new files, fsync'd (what any
 *   signer must at least do: read the input, write the output durably);
 * - sha256: one node:crypto sha256 pass over the same bytes, in memory (the least hashing a
 *   content-addressed cache needs: one digest of the input);
 * - unique work: CPU time of decompress → Authenticode-sign → recompress of every *unique* signable
 *   entry of the release (identical entries across locales counted once), measured in-process on one
 *   thread, divided by the cores: what a perfect parallel signer with a perfect cache cannot beat.
 */
import { createHash } from 'node:crypto';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { decompressEntry, recompressEntry } from '../../src/codecs/index.js';
import { loadProfile } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { readEntryBytes, readMar } from '../../src/formats/mar/index.js';
import { BufferSource, FileSource } from '../../src/io/byte-source.js';
import { compilePolicy } from '../../src/pipeline/policy.js';
import { signPe } from '../../src/signing/authenticode.js';

const CHUNK = 8 << 20;

export interface DiskFloor {
  ms: number;
  /** CPU time (user + system) of the reads and writes: copying 2× the bytes through the kernel. */
  cpuMs: number;
  bytesRead: number;
  bytesWritten: number;
}

/** Read each file in 8 MiB chunks and write the chunks to a new file in `outDir`, fsync, close. */
export async function diskFloor(files: string[], outDir: string): Promise<DiskFloor> {
  const buf = Buffer.allocUnsafeSlow(CHUNK);
  let bytesRead = 0;
  let bytesWritten = 0;
  const outs: string[] = [];
  const t0 = performance.now();
  const c0 = cpuNow();
  for (const [i, path] of files.entries()) {
    const out = join(outDir, `floor-${i}.out`);
    outs.push(out);
    const src = await open(path, 'r');
    const dst = await open(out, 'w');
    try {
      for (;;) {
        const { bytesRead: n } = await src.read(buf, 0, CHUNK, null);
        if (n === 0) break;
        bytesRead += n;
        let off = 0;
        while (off < n) off += (await dst.write(buf, off, n - off)).bytesWritten;
        bytesWritten += n;
      }
      await dst.sync();
    } finally {
      await src.close();
      await dst.close();
    }
  }
  const ms = performance.now() - t0;
  const cpuMs = cpuNow() - c0;
  for (const o of outs) await rm(o, { force: true });
  return { ms, cpuMs, bytesRead, bytesWritten };
}

export interface ShaFloor {
  ms: number;
  bytes: number;
}

/** sha256 of every file's bytes, timing the hashing only (files are read into memory first). */
export async function sha256Floor(files: string[]): Promise<ShaFloor> {
  let ms = 0;
  let bytes = 0;
  for (const path of files) {
    const data = await readFile(path);
    const t0 = performance.now();
    createHash('sha256').update(data).digest();
    ms += performance.now() - t0;
    bytes += data.length;
  }
  return { ms, bytes };
}

export interface UniqueEntryWork {
  name: string;
  sha256: string;
  /** Stored (compressed) size and uncompressed size. */
  storedSize: number;
  size: number;
  /** CPU milliseconds (user + system, all threads of this process) per step. */
  cpuMs: { decompress: number; sign: number; compress: number };
  wallMs: number;
  /** Indexes (in the given file list) of the MARs holding this entry. */
  mars: number[];
}

export interface WorkFloor {
  cores: number;
  uniqueEntries: number;
  uniqueBytes: number;
  cpuMs: number;
  /** cpuMs / cores. */
  floorMs: number;
  /** The same for the first MAR alone (one locale cold: every signable entry of it is unique work). */
  firstMar: { entries: number; bytes: number; cpuMs: number; floorMs: number };
  entries: UniqueEntryWork[];
}

function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * Decompress, sign and recompress each unique signable entry of `mars`, one at a time on this thread,
 * with the profile's key and policy (the same ones the pipeline uses).
 */
export async function workFloor(
  mars: string[],
  config: LoadedConfig,
  profileName: string,
  cores: number,
  log: (m: string) => void = () => {},
  /** false: measure the whole-stream bzip2 path (MARSIGN_BZ2_BLOCK_REUSE=0) for comparison. */
  bz2BlockReuse = true,
): Promise<WorkFloor> {
  const prevReuse = process.env.MARSIGN_BZ2_BLOCK_REUSE;
  if (!bz2BlockReuse) process.env.MARSIGN_BZ2_BLOCK_REUSE = '0';
  try {
    return await measureWork(mars, config, profileName, cores, log);
  } finally {
    if (prevReuse === undefined) delete process.env.MARSIGN_BZ2_BLOCK_REUSE;
    else process.env.MARSIGN_BZ2_BLOCK_REUSE = prevReuse;
  }
}

async function measureWork(
  mars: string[],
  config: LoadedConfig,
  profileName: string,
  cores: number,
  log: (m: string) => void,
): Promise<WorkFloor> {
  const profile = await loadProfile(config, profileName);
  if (!profile.authenticode) throw new Error(`profile ${profileName} has no authenticode settings`);
  const policy = compilePolicy(profile.policy);
  const seen = new Map<string, UniqueEntryWork>();
  for (const [mi, path] of mars.entries()) {
    const source = await FileSource.open(path);
    try {
      const info = await readMar(source);
      for (const e of info.entries) {
        if (policy.decide(e.name) !== 'sign') continue;
        const raw = await readEntryBytes(source, e);
        const sha = createHash('sha256').update(raw).digest('hex');
        const prev = seen.get(sha);
        if (prev) {
          prev.mars.push(mi);
          continue;
        }
        const w0 = performance.now();
        const c0 = cpuNow();
        // The pipeline's own codec calls (bzip2: block-wise decode, re-encode of changed blocks only).
        const decoded = await decompressEntry(raw);
        const data = decoded.data;
        const c1 = cpuNow();
        const signed = await signPe(data, profile.authenticode);
        const c2 = cpuNow();
        await recompressEntry(signed, decoded);
        const c3 = cpuNow();
        seen.set(sha, {
          name: e.name,
          sha256: sha,
          storedSize: raw.length,
          size: data.length,
          cpuMs: { decompress: c1 - c0, sign: c2 - c1, compress: c3 - c2 },
          wallMs: performance.now() - w0,
          mars: [mi],
        });
      }
    } finally {
      await source.close();
    }
  }
  log(`work floor: ${seen.size} unique entries in ${mars.length} MARs`);
  const entries = [...seen.values()];
  const total = (es: UniqueEntryWork[]): number =>
    es.reduce((s, e) => s + e.cpuMs.decompress + e.cpuMs.sign + e.cpuMs.compress, 0);
  const first = entries.filter((e) => e.mars.includes(0));
  const cpuMs = total(entries);
  return {
    cores,
    uniqueEntries: entries.length,
    uniqueBytes: entries.reduce((s, e) => s + e.size, 0),
    cpuMs,
    floorMs: cpuMs / cores,
    firstMar: {
      entries: first.length,
      bytes: first.reduce((s, e) => s + e.size, 0),
      cpuMs: total(first),
      floorMs: total(first) / cores,
    },
    entries,
  };
}

/**
 * The digests, signatures and checks every locale of a release must make however it is built — the
 * per-locale floor that "disk + sha256" leaves out — one thread's CPU time each, summed over the release:
 * - `inputSha256`: the whole input (the output tier's key and the audit record's input digest);
 * - `entryKeys`: each signable entry's stored bytes (its cache key);
 * - `cacheChecks`: each unique cached signed entry read back once (the cache's integrity check; a signer
 *   could keep the checked bytes for the other locales; the stored bytes stand in for them: a signed
 *   re-encoded entry is within ~0.1% of the size of its input);
 * - `containerSha384` + `containerSign`: the MAR signature (sha384 over the output, one RSA signature per
 *   MAR key of the profile; the input stands in for the output);
 * - `outputSha256` + `outputSha512`: the manifest's and SHA512SUMS's digests of the output;
 * - `passthroughChecks` (cold only): each unique passthrough entry decoded once (issue 10's check; a warm
 *   run finds the cache's marker instead).
 */
export interface RequiredFloor {
  locales: number;
  bytes: number;
  cpuMs: {
    inputSha256: number;
    entryKeys: number;
    cacheChecks: number;
    containerSha384: number;
    containerSign: number;
    outputSha256: number;
    outputSha512: number;
    passthroughChecks: number;
  };
  passthroughUnique: number;
  /** Every pass a warm locale must make (all but the passthrough checks), summed over the release. */
  warmCpuMs: number;
}

export async function requiredFloor(
  mars: string[],
  config: LoadedConfig,
  profileName: string,
): Promise<RequiredFloor> {
  const profile = await loadProfile(config, profileName);
  const policy = compilePolicy(profile.policy);
  const keys = profile.mar?.keys ?? [];
  const cpu = {
    inputSha256: 0,
    entryKeys: 0,
    cacheChecks: 0,
    containerSha384: 0,
    containerSign: 0,
    outputSha256: 0,
    outputSha512: 0,
    passthroughChecks: 0,
  };
  const timed = async (k: keyof typeof cpu, f: () => unknown): Promise<void> => {
    const c0 = cpuNow();
    await f();
    cpu[k] += cpuNow() - c0;
  };
  const checked = new Set<string>();
  const verified = new Set<string>();
  let bytes = 0;
  for (const path of mars) {
    const data = await readFile(path);
    bytes += data.length;
    const info = await readMar(new BufferSource(data));
    // One untimed pass first, so no timed pass pays for the first touch of freshly read memory (a floor
    // is a lower bound).
    createHash('sha1').update(data).digest();
    await timed('inputSha256', () => createHash('sha256').update(data).digest());
    for (const e of info.entries) {
      const raw = data.subarray(e.offset, e.offset + e.size);
      if (policy.decide(e.name) === 'sign') {
        let id = '';
        await timed('entryKeys', () => (id = createHash('sha256').update(raw).digest('hex')));
        if (verified.has(id)) continue;
        verified.add(id);
        await timed('cacheChecks', () => createHash('sha256').update(raw).digest());
        continue;
      }
      const id = createHash('sha256').update(raw).digest('hex');
      if (checked.has(id)) continue;
      checked.add(id);
      await timed('passthroughChecks', () => decompressEntry(raw));
    }
    let digest: Buffer = Buffer.alloc(0);
    await timed('containerSha384', () => (digest = createHash('sha384').update(data).digest()));
    for (const key of keys) await timed('containerSign', () => key.signDigest('sha384', digest));
    await timed('outputSha256', () => createHash('sha256').update(data).digest());
    await timed('outputSha512', () => createHash('sha512').update(data).digest());
  }
  const { passthroughChecks: _p, ...warm } = cpu;
  return {
    locales: mars.length,
    bytes,
    cpuMs: cpu,
    passthroughUnique: checked.size,
    warmCpuMs: Object.values(warm).reduce((a, b) => a + b, 0),
  };
}
