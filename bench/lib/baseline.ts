/**
 * The baseline: what Mozilla's old signing scripts did for one locale MAR, file by file, with a
 * process per step and no cache:
 *   `bzip2 -dc` / `xz -dc` → `osslsigncode sign -certs -key` → `bzip2 -9` / `xz --x86 --lzma2 ...`
 * then repack. The repack uses our MarWriter and MAR-signs in-process with the profile's MAR key
 * (instead of `signmar`: one spawn per MAR, negligible next to the per-file spawns).
 *
 * Kept generous to the baseline, so the speed-up it is compared with is not inflated:
 * - only the entries the signing policy matches are unpacked; the old scripts decompressed and
 *   recompressed every file of the MAR (`unwrap_full_update.pl` / `make_full_update.sh`);
 * - xz runs as Mozilla's `make_full_update.sh` line, `xz --compress --x86 --lzma2 --format=xz
 *   --check=crc64`, with XZ_OPT unset, i.e. preset 6 (8 MiB dictionary, the generator's setting);
 *   Mozilla's `common.sh` sets `XZ_OPT=-T1 -7e`, which is slower.
 *
 * Run as a child process (`bench/lib/baseline-cli.ts`) so spawns happen from a small process, as from
 * a shell script (fork/exec cost grows with the parent's size: codec-benchmarks.md "Process spawn").
 */
import { spawn } from 'node:child_process';
import { open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { detectCodec } from '../../src/codecs/index.js';
import type { LoadedConfig } from '../../src/config/index.js';
import { loadProfile, resolvePath } from '../../src/config/index.js';
import { readEntryBytes, readMar } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { MarWriter } from '../../src/mar/writer.js';
import { compilePolicy } from '../../src/pipeline/policy.js';
import { marSignatureSlots, signWriter } from '../../src/signing/mar-signer.js';

export interface BaselineLocaleOptions {
  input: string;
  output: string;
  /** Scratch folder for the per-file temp files (emptied as it goes). */
  workDir: string;
  config: LoadedConfig;
  profile: string;
}

export interface BaselineLocaleResult {
  input: string;
  ms: number;
  entries: number;
  signed: number;
  spawns: number;
  inputBytes: number;
  outputBytes: number;
}

/** Run one command; stdin/stdout optionally redirected from/to files, like `cmd < in > out`. */
async function run(cmd: string, args: string[], io: { stdin?: string; stdout?: string } = {}): Promise<void> {
  const inFh = io.stdin ? await open(io.stdin, 'r') : undefined;
  const outFh = io.stdout ? await open(io.stdout, 'w') : undefined;
  try {
    await new Promise<void>((resolvePromise, reject) => {
      const env = { ...process.env };
      delete env.XZ_OPT;
      delete env.BZIP2;
      const child = spawn(cmd, args, {
        stdio: [inFh ? inFh.fd : 'ignore', outFh ? outFh.fd : 'ignore', 'pipe'],
        env,
      });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0) resolvePromise();
        else
          reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${stderr.trim().slice(0, 500)}`));
      });
    });
  } finally {
    await inFh?.close();
    await outFh?.close();
  }
}

/** The decompress and compress command lines of the old scripts, per codec. */
export const BASELINE_COMMANDS = {
  bz2: { decompress: ['bzip2', ['-dc']], compress: ['bzip2', ['-9', '-c']] },
  xz: {
    decompress: ['xz', ['-dc']],
    compress: ['xz', ['--compress', '--x86', '--lzma2', '--format=xz', '--check=crc64', '-T1', '-c']],
  },
} as const satisfies Record<string, Record<'decompress' | 'compress', readonly [string, readonly string[]]>>;

/** Sign one locale MAR the old way. */
export async function baselineLocale(o: BaselineLocaleOptions): Promise<BaselineLocaleResult> {
  const t0 = performance.now();
  const profile = await loadProfile(o.config, o.profile);
  const policy = compilePolicy(profile.policy);
  const ac = o.config.file.profiles[o.profile]?.authenticode;
  if (!ac?.certChain || !ac.key)
    throw new Error(`profile ${o.profile} needs authenticode.certChain and .key (PEM)`);
  const certs = resolvePath(o.config.dir, ac.certChain);
  const key = resolvePath(o.config.dir, ac.key);
  const digest = profile.authenticode?.digest ?? 'sha256';

  const source = await FileSource.open(o.input);
  let spawns = 0;
  let signed = 0;
  try {
    const info = await readMar(source);
    const slots = profile.mar ? marSignatureSlots(profile.mar.keys, profile.mar.algorithm) : [];
    const w = await MarWriter.create(o.output, {
      ...(info.productInfo
        ? { productInfo: { channel: info.productInfo.channel, version: info.productInfo.version } }
        : {}),
      signatureSlots: slots,
    });
    try {
      const f = (n: string): string => join(o.workDir, n);
      for (const entry of info.entries) {
        const raw = await readEntryBytes(source, entry);
        const codec = detectCodec(raw);
        if (policy.decide(entry.name) !== 'sign' || codec === 'none') {
          await w.addEntry(entry.name, entry.flags, raw);
          continue;
        }
        const cmds = BASELINE_COMMANDS[codec];
        await writeFile(f('entry.in'), raw);
        await run(cmds.decompress[0], [...cmds.decompress[1]], {
          stdin: f('entry.in'),
          stdout: f('entry.pe'),
        });
        await rm(f('entry.signed'), { force: true });
        await run('osslsigncode', [
          'sign',
          '-certs',
          certs,
          '-key',
          key,
          '-h',
          digest,
          '-in',
          f('entry.pe'),
          '-out',
          f('entry.signed'),
        ]);
        await run(cmds.compress[0], [...cmds.compress[1]], {
          stdin: f('entry.signed'),
          stdout: f('entry.out'),
        });
        spawns += 3;
        signed++;
        await w.addEntry(entry.name, entry.flags, new Uint8Array(await readFile(f('entry.out'))));
      }
      await w.finish();
      if (profile.mar) await signWriter(w, profile.mar.keys, profile.mar.algorithm);
      await w.commit();
    } catch (err) {
      await w.abort();
      throw err;
    }
    for (const n of ['entry.in', 'entry.pe', 'entry.signed', 'entry.out'])
      await rm(join(o.workDir, n), { force: true });
    const outputBytes = (await stat(o.output)).size;
    return {
      input: o.input,
      ms: performance.now() - t0,
      entries: info.entries.length,
      signed,
      spawns,
      inputBytes: source.size,
      outputBytes,
    };
  } finally {
    await source.close();
  }
}
