/**
 * The audit log's costs: one append as a locale makes it (lock, tail read, write + fsync, head replace),
 * and `audit verify` / `audit find` over a log of `--records` records (default 100k), streamed.
 *
 *   npm run bench:audit [-- --records 100000 --appends 200 --json]
 *
 * The big log is written with the real chain (serializeRecord + lineDigest, the writer's code) in one go,
 * not through 100k locked appends. Times are wall ms and CPU ms of this process; the load average is
 * printed with them (docs/BENCHMARKS.md "Audit").
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { findRecords } from '../src/audit/find.js';
import { AuditLog, headPath } from '../src/audit/log.js';
import { lineDigest, serializeLogStart, serializeRecord } from '../src/audit/record.js';
import { GENESIS, type AuditEvent } from '../src/audit/types.js';
import { verifyLog } from '../src/audit/verify.js';

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '100000' },
    appends: { type: 'string', default: '200' },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(values.records);
const APPENDS = Number(values.appends);
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

function event(i: number): AuditEvent {
  return {
    time: new Date(1_700_000_000_000 + i).toISOString(),
    op: 'authenticode',
    client: 'release-bot',
    release: `rel-${Math.floor(i / 500)}`,
    locale: `l${i % 100}`,
    container: 'mar',
    entry: `browser/features/entry-${i % 40}.dll`,
    action: i % 10 === 0 ? 'signed' : 'cached',
    cache: i % 10 === 0 ? 'miss' : 'hit',
    inputSha256: sha(`in ${i}`),
    outputSha256: sha(`out ${i}`),
    profile: 'release',
    fingerprint: sha('fp'),
    keys: [{ id: sha('key'), uri: 'pkcs11:token=marsign-release;object=codesign' }],
    tsa: 'http://timestamp.example/',
    host: 'worker-1',
    version: '0.1.0',
    sid: `${1_700_000_000_000 + i}-0`,
  };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number; cpuMs: number }> {
  const c = process.cpuUsage();
  const t = performance.now();
  const value = await fn();
  const cpu = process.cpuUsage(c);
  return { value, ms: performance.now() - t, cpuMs: (cpu.user + cpu.system) / 1000 };
}

const dir = mkdtempSync(join(tmpdir(), 'marsign-bench-audit-'));
try {
  const load = loadavg().map((x) => x.toFixed(2));
  // 1. Appends as locales make them: 5 records each (4 entries + the MAR signature).
  const small = await AuditLog.open(join(dir, 'appends.jsonl'));
  const append = await timed(async () => {
    for (let i = 0; i < APPENDS; i++) await small.append([0, 1, 2, 3, 4].map((k) => event(i * 5 + k)));
  });

  // 2. A big log with a real chain.
  const big = join(dir, 'audit.jsonl');
  const lines: string[] = [];
  let prev = GENESIS;
  let line = serializeLogStart({ v: 1, seq: 1, prev }, { prevLog: null });
  lines.push(line);
  prev = lineDigest(line);
  for (let i = 0; i < N; i++) {
    line = serializeRecord({ v: 1, seq: i + 2, prev }, event(i));
    lines.push(line);
    prev = lineDigest(line);
  }
  writeFileSync(big, lines.join('\n') + '\n');
  writeFileSync(
    headPath(big),
    JSON.stringify({ v: 1, log: 'audit.jsonl', seq: N + 1, digest: prev, time: new Date().toISOString() }) +
      '\n',
  );
  const size = statSync(big).size;
  const verify = await timed(() => verifyLog(big));
  if (!verify.value.ok) throw new Error(`bench log does not verify: ${verify.value.problem?.reason}`);
  const target = Math.floor(N * 0.7);
  const findSha = await timed(() => findRecords([big], { sha256: sha(`out ${target}`) }));
  const findRel = await timed(() => findRecords([big], { release: `rel-${Math.floor(target / 500)}` }));
  const result = {
    loadavg: load,
    append: {
      appends: APPENDS,
      recordsEach: 5,
      msPerAppend: +(append.ms / APPENDS).toFixed(2),
      cpuMsPerAppend: +(append.cpuMs / APPENDS).toFixed(2),
    },
    log: { records: N + 1, bytes: size, bytesPerRecord: Math.round(size / (N + 1)) },
    verify: { ms: Math.round(verify.ms), cpuMs: Math.round(verify.cpuMs) },
    findSha256: { ms: Math.round(findSha.ms), cpuMs: Math.round(findSha.cpuMs), found: findSha.value.length },
    findRelease: {
      ms: Math.round(findRel.ms),
      cpuMs: Math.round(findRel.cpuMs),
      found: findRel.value.length,
    },
  };
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`load average ${load.join(' ')}`);
    console.log(
      `append (5 records, lock+fsync+head): ${result.append.msPerAppend} ms wall, ${result.append.cpuMsPerAppend} ms CPU each (${APPENDS} appends)`,
    );
    console.log(
      `log: ${result.log.records} records, ${(size / 1048576).toFixed(1)} MiB (${result.log.bytesPerRecord} B/record)`,
    );
    console.log(`audit verify: ${result.verify.ms} ms wall, ${result.verify.cpuMs} ms CPU`);
    console.log(
      `audit find --sha256: ${result.findSha256.ms} ms wall, ${result.findSha256.cpuMs} ms CPU (${result.findSha256.found} found)`,
    );
    console.log(
      `audit find --release: ${result.findRelease.ms} ms wall, ${result.findRelease.cpuMs} ms CPU (${result.findRelease.found} found)`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
