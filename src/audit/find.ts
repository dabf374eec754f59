/**
 * `marsign audit find`: which release, locale, key and client produced a binary. Streams the log (no
 * index: a 100k-record log is read in about a second, docs/BENCHMARKS.md "Audit"); a line is parsed
 * only when its text contains what is asked for.
 */
import { readLines } from './lines.js';
import { parseRecord } from './record.js';
import type { AuditRecord } from './types.js';

export interface FindQuery {
  /** Hex sha256 of an input or output: an entry's stored bytes, or a whole input/output file. */
  sha256?: string;
  release?: string;
}

export interface FoundRecord {
  log: string;
  line: number;
  record: AuditRecord;
  /** Which digest matched (sha256 queries). */
  matched?: 'input' | 'output';
}

export async function findRecords(logs: readonly string[], q: FindQuery): Promise<FoundRecord[]> {
  const sha = q.sha256?.toLowerCase();
  const needle = sha ?? (q.release !== undefined ? JSON.stringify(q.release) : undefined);
  if (!needle) return [];
  const out: FoundRecord[] = [];
  for (const log of logs) {
    for await (const l of readLines(log)) {
      if (!l.terminated || l.tooLong) continue;
      const text = l.bytes.toString('utf8');
      if (!text.includes(needle)) continue;
      const r = parseRecord(text);
      if (typeof r === 'string' || r.op === 'log-start') continue;
      if (sha) {
        const matched = r.outputSha256 === sha ? 'output' : r.inputSha256 === sha ? 'input' : undefined;
        if (matched) out.push({ log, line: l.n, record: r, matched });
      } else if (r.release === q.release) out.push({ log, line: l.n, record: r });
    }
  }
  return out;
}
