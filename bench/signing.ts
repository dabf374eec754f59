/**
 * Signing throughput: marsign's in-process Authenticode signer (signPe) on the PE corpus, next to
 * `osslsigncode sign` on the same files with the same key, certificate chain and digest, plus MAR
 * signing (signMarFile) of a MAR holding the corpus.
 *
 *   npm run bench:signing [-- --runs 3 --limit 0 --json]
 *
 * Both signers run one file at a time on one core; no timestamp (no network). osslsigncode is a
 * process per file (how build scripts use it), so its figure includes process start; the library
 * figure is bytes in memory → signed bytes. A third row runs signPe plus read/write of the files,
 * which is what `marsign sign-pe` adds besides Node start-up.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, loadProfile } from '../src/config/index.js';
import { generateDevKeys, pemCertificates } from '../src/keys/index.js';
import { MarWriter } from '../src/mar/writer.js';
import { signPe, isPe } from '../src/signing/authenticode.js';
import { signMarFile } from '../src/signing/mar-signer.js';
import { verifyPe } from '../src/signing/verify-pe.js';
import { peCorpus } from '../test/helpers/env.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    limit: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
  },
});
const RUNS = Math.max(1, Number(values.runs));
const LIMIT = Number(values.limit);

function corpusFiles(): string[] {
  const files = peCorpus();
  if (typeof files === 'string') throw new Error(`the PE corpus is needed: ${files}`);
  return files;
}

/** CPU seconds of this process (user+sys) and of its waited-for children (/proc/self/stat cutime+cstime, Linux). */
function cpuSeconds(): { self: number; children: number } {
  const u = process.cpuUsage();
  let children = NaN;
  try {
    const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
    // After "pid (comm) ": field 3 is index 0, so cutime (16) and cstime (17) are indexes 13 and 14; 100 ticks/s.
    children = (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    // not Linux: child CPU time unknown
  }
  return { self: (u.user + u.system) / 1e6, children };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'marsign-bench-signing-'));
  try {
    const dev = await generateDevKeys(join(work, 'keys'), { marKeyBits: 4096 });
    const profile = await loadProfile(await loadConfig(dev.config), 'dev');
    const auth = profile.authenticode!;

    // Only files both signers accept: PEs that signPe can sign.
    let files = corpusFiles().filter((f) => isPe(readFileSync(f)));
    if (LIMIT > 0) files = files.slice(0, LIMIT);
    const inputs = files.map((f) => ({ path: f, bytes: readFileSync(f) }));
    const accepted: typeof inputs = [];
    for (const i of inputs) {
      try {
        await signPe(i.bytes, auth);
        accepted.push(i);
      } catch {
        // not signable (e.g. malformed or unsupported); left out of both measurements
      }
    }
    const totalBytes = accepted.reduce((n, i) => n + i.bytes.length, 0);
    const outDir = join(work, 'out');
    mkdirSync(outDir, { recursive: true });

    const lib: number[] = [];
    const libIo: number[] = [];
    const ossl: number[] = [];
    const libCpu: number[] = [];
    const osslCpu: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      let t = performance.now();
      let c = cpuSeconds();
      for (const i of accepted) await signPe(i.bytes, auth);
      lib.push(performance.now() - t);
      libCpu.push(cpuSeconds().self - c.self);

      t = performance.now();
      for (const [n, i] of accepted.entries()) {
        const signed = await signPe(readFileSync(i.path), auth);
        writeFileSync(join(outDir, `m${n}`), signed);
      }
      libIo.push(performance.now() - t);

      t = performance.now();
      c = cpuSeconds();
      for (const [n, i] of accepted.entries()) {
        const out = join(outDir, `o${n}`);
        rmSync(out, { force: true });
        const r = spawnSync(
          'osslsigncode',
          [
            'sign',
            '-certs',
            dev.codeSigningChain,
            '-key',
            dev.codeSigningKey,
            '-h',
            'sha256',
            '-n',
            auth.programName ?? 'x',
            '-i',
            auth.programUrl ?? 'https://example.invalid',
            '-in',
            i.path,
            '-out',
            out,
          ],
          { encoding: 'utf8' },
        );
        if (r.status !== 0) throw new Error(`osslsigncode sign ${i.path}: ${r.stderr}`);
      }
      ossl.push(performance.now() - t);
      osslCpu.push(cpuSeconds().children - c.children);
    }

    // Sanity: our outputs verify with our verifier and osslsigncode (a sample).
    let verified = 0;
    for (const n of [0, Math.floor(accepted.length / 2), accepted.length - 1]) {
      const p = join(outDir, `m${n}`);
      const v = verifyPe(readFileSync(p), { caCertsDer: pemCertificates(readFileSync(dev.caCert)) });
      const o = spawnSync('osslsigncode', ['verify', '-CAfile', dev.caCert, '-in', p], { encoding: 'utf8' });
      if (v.digestMatches && v.signatureValid && v.chainValid && o.status === 0) verified++;
    }

    // MAR signing: one MAR with every accepted file stored raw, signed with one RSA-4096 key (id 2).
    const mar = join(work, 'corpus.mar');
    const w = await MarWriter.create(mar, { productInfo: { channel: 'bench', version: '1.0' } });
    for (const [n, i] of accepted.entries()) await w.addEntry(`f${n}.bin`, 0o644, i.bytes);
    const marInfo = await w.finish();
    await w.commit();
    const marTimes: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const t = performance.now();
      await signMarFile(mar, join(work, 'corpus.signed.mar'), profile.mar!);
      marTimes.push(performance.now() - t);
    }

    const MB = totalBytes / 1e6;
    const row = (name: string, ms: number, cpu?: number) => ({
      signer: name,
      seconds: +(ms / 1000).toFixed(3),
      mbPerSec: +(MB / (ms / 1000)).toFixed(1),
      filesPerSec: +(accepted.length / (ms / 1000)).toFixed(1),
      cpuSeconds: cpu === undefined ? null : +cpu.toFixed(3),
      mbPerCpuSec: cpu === undefined ? null : +(MB / cpu).toFixed(1),
    });
    const result = {
      machine: `${cpus()[0]?.model ?? 'cpu'} x${cpus().length}, node ${process.version}`,
      files: accepted.length,
      skipped: files.length - accepted.length,
      megabytes: +MB.toFixed(1),
      runs: RUNS,
      verifiedSample: `${verified}/3`,
      rows: [
        row('marsign signPe (in memory, 1 thread)', median(lib), median(libCpu)),
        row('marsign signPe + read/write files', median(libIo)),
        row('osslsigncode 2.9 sign (process per file)', median(ossl), median(osslCpu)),
      ],
      loadAverage: loadavg().map((x) => +x.toFixed(1)),
      speedupVsOsslsigncode: +(median(ossl) / median(lib)).toFixed(1),
      cpuRatioVsOsslsigncode: +(median(osslCpu) / median(libCpu)).toFixed(1),
      mar: {
        megabytes: +(marInfo.fileSize / 1e6).toFixed(1),
        seconds: +(median(marTimes) / 1000).toFixed(3),
        mbPerSec: +(marInfo.fileSize / 1e6 / (median(marTimes) / 1000)).toFixed(1),
        key: 'RSA-4096, SHA-384 (id 2)',
      },
    };
    if (values.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else {
      const lines = [
        `${result.files} PE files, ${result.megabytes} MB (${result.skipped} skipped), median of ${RUNS} runs; ${result.machine}`,
        '',
        '| signer | s (wall) | MB/s | files/s | CPU s | MB per CPU-s |',
        '|---|---:|---:|---:|---:|---:|',
        ...result.rows.map(
          (r) =>
            `| ${r.signer} | ${r.seconds} | ${r.mbPerSec} | ${r.filesPerSec} | ${r.cpuSeconds ?? '–'} | ${r.mbPerCpuSec ?? '–'} |`,
        ),
        '',
        `signPe is ${result.speedupVsOsslsigncode}x osslsigncode by wall time, ${result.cpuRatioVsOsslsigncode}x by CPU time; load average at the end ${result.loadAverage.join(' ')}`,
        `sample outputs verified (ours + osslsigncode): ${result.verifiedSample}`,
        `MAR signing (signMarFile, repack + ${result.mar.key}): ${result.mar.megabytes} MB in ${result.mar.seconds} s = ${result.mar.mbPerSec} MB/s`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
