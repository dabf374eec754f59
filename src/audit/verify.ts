/**
 * `marsign audit verify`: re-hash a log's chain and name the first bad line.
 *
 * Each line's `seq` must be one more than the line before and its `prev` the sha256 of the line before
 * (as written). Which line was touched is told from the neighbours: a changed line breaks the next
 * line's `prev` (and, if its own `prev` was changed, its own link too); a removed line leaves a gap in
 * `seq`; swapped lines put a later `seq` first. The end of the chain is checked against `<log>.head`
 * (an edited or removed last line has no next line to break), the start against the predecessor log
 * its log-start names, when that file is beside it.
 */
import { basename, dirname, join } from 'node:path';
import { readLines } from './lines.js';
import { logExists, readHead, readTail, type AuditHead } from './log.js';
import { lineDigest, parseRecord } from './record.js';
import { GENESIS } from './types.js';

export type ProblemKind = 'edited' | 'missing' | 'reordered' | 'truncated' | 'malformed' | 'unanchored';

export interface VerifyProblem {
  /** 1-based line number of the first bad line. */
  line: number;
  kind: ProblemKind;
  reason: string;
}

export interface VerifyReport {
  log: string;
  ok: boolean;
  /** Lines read. */
  lines: number;
  firstSeq?: number;
  lastSeq?: number;
  /** sha256 of the last line (what the next record or log would chain to). */
  lastDigest?: string;
  predecessor: { log: string | null; status: 'none' | 'ok' | 'not checked' | 'broken' };
  head: { status: 'ok' | 'behind' | 'missing' | 'broken'; seq?: number; unanchored?: number };
  /** What could not be checked, one line each. */
  notChecked: string[];
  problem?: VerifyProblem;
}

interface Line {
  n: number;
  digest: string;
  seq: number;
  prev: string;
  terminated: boolean;
  op?: string;
  prevLog?: string | null;
  err?: string;
}

export async function verifyLog(path: string): Promise<VerifyReport> {
  const report: VerifyReport = {
    log: path,
    ok: false,
    lines: 0,
    predecessor: { log: null, status: 'none' },
    head: { status: 'missing' },
    notChecked: [],
  };
  let head: AuditHead | undefined;
  let headBad = false;
  try {
    head = await readHead(path);
  } catch {
    headBad = true;
  }
  // The digest of the line whose seq the head names, once seen.
  let atHead: string | undefined;
  const fail = (line: number, kind: ProblemKind, reason: string): VerifyReport => {
    report.problem = { line, kind, reason };
    return report;
  };

  /** Line k's link to k-1, with k+1 (or the head) to tell which of them changed. */
  const link = (a: Line, b: Line, c: Line | undefined): VerifyProblem | undefined => {
    const expected = a.seq + 1;
    if (b.seq !== expected) {
      if (b.seq > expected && c?.seq === expected)
        return {
          line: b.n,
          kind: 'reordered',
          reason: `holds seq ${b.seq} where ${expected} belongs, and line ${c.n} holds ${expected}: the lines are out of order`,
        };
      if (b.seq > expected)
        return {
          line: b.n,
          kind: 'missing',
          reason: `holds seq ${b.seq} after ${a.seq}: ${b.seq - expected === 1 ? `record ${expected} is` : `records ${expected}..${b.seq - 1} are`} missing before it`,
        };
      return {
        line: b.n,
        kind: 'reordered',
        reason: `holds seq ${b.seq} after ${a.seq}: out of order or repeated`,
      };
    }
    if (b.prev !== a.digest) {
      const nextBreaks = c
        ? c.prev !== b.digest
        : head !== undefined && head.seq === b.seq && head.digest !== b.digest;
      if (nextBreaks)
        return {
          line: b.n,
          kind: 'edited',
          reason: `changed: its prev is not the digest of line ${a.n}, and its own digest is not what ${c ? `line ${c.n}` : 'the head'} names`,
        };
      return {
        line: a.n,
        kind: 'edited',
        reason: `changed: its digest ${a.digest.slice(0, 16)}… is not line ${b.n}'s prev ${b.prev.slice(0, 16)}…`,
      };
    }
    return undefined;
  };

  const summary = (n: number, bytes: Buffer, terminated: boolean, tooLong: boolean): Line => {
    const digest = lineDigest(bytes);
    if (tooLong) return { n, digest, seq: -1, prev: '', terminated, err: 'longer than a record may be' };
    if (bytes.length === 0) return { n, digest, seq: -1, prev: '', terminated, err: 'empty line' };
    const r = parseRecord(bytes.toString('utf8'));
    if (typeof r === 'string') return { n, digest, seq: -1, prev: '', terminated, err: r };
    return {
      n,
      digest,
      seq: r.seq,
      prev: r.prev,
      terminated,
      op: r.op,
      ...(r.op === 'log-start' ? { prevLog: r.prevLog } : {}),
    };
  };

  const bad = (l: Line): VerifyProblem | undefined => {
    if (!l.terminated)
      return {
        line: l.n,
        kind: 'truncated',
        reason: `the last line has no line break (${l.err ? 'and is not a record: ' : ''}cut short: a torn write or a truncated file)`,
      };
    if (l.err)
      return { line: l.n, kind: 'malformed', reason: `not an audit record (${l.err}): edited or corrupted` };
    return undefined;
  };

  let a: Line | undefined;
  let b: Line | undefined;
  const step = async (c: Line | undefined): Promise<VerifyProblem | undefined> => {
    // Check b (its own shape and its link to a), knowing c.
    if (!b) return undefined;
    const own = bad(b);
    if (own) return own;
    if (head && b.seq === head.seq) atHead = b.digest;
    if (!a) {
      report.firstSeq = b.seq;
      if (b.op !== 'log-start')
        return {
          line: b.n,
          kind: 'missing',
          reason: `the first line is a ${b.op} record (seq ${b.seq}), not a log-start: records at the start are missing`,
        };
      return startLink(path, b, report);
    }
    if (c && !bad(c) && c.err === undefined) return link(a, b, c);
    return link(a, b, undefined);
  };

  try {
    for await (const raw of readLines(path)) {
      const c = summary(raw.n, raw.bytes, raw.terminated, raw.tooLong);
      report.lines = raw.n;
      const p = await step(c);
      if (p) return fail(p.line, p.kind, p.reason);
      a = b;
      b = c;
    }
    const p = await step(undefined);
    if (p) return fail(p.line, p.kind, p.reason);
  } catch (e) {
    throw Object.assign(new Error(`cannot read ${path}: ${(e as Error).message}`), { cause: e });
  }
  if (!b) return fail(1, 'missing', 'the log is empty: not even a log-start');
  report.lastSeq = b.seq;
  report.lastDigest = b.digest;

  if (headBad) {
    report.head = { status: 'broken' };
    return fail(
      b.n,
      'unanchored',
      `${basename(path)}.head is not a head file: the end of the log cannot be checked`,
    );
  }
  if (!head) {
    report.notChecked.push(
      `no ${basename(path)}.head: the end of the chain is not anchored (a removed or edited last line would not show)`,
    );
  } else if (head.seq === b.seq) {
    if (head.digest !== b.digest) {
      report.head = { status: 'broken', seq: head.seq };
      return fail(
        b.n,
        'edited',
        `changed: its digest is not the one ${basename(path)}.head records for seq ${head.seq}`,
      );
    }
    report.head = { status: 'ok', seq: head.seq };
  } else if (head.seq > b.seq) {
    report.head = { status: 'broken', seq: head.seq };
    return fail(
      b.n + 1,
      'missing',
      `the log ends at seq ${b.seq} but ${basename(path)}.head records seq ${head.seq}: records were removed from the end`,
    );
  } else if (atHead === undefined || atHead !== head.digest) {
    report.head = { status: 'broken', seq: head.seq };
    return fail(
      b.n - (b.seq - head.seq),
      atHead === undefined ? 'missing' : 'edited',
      `the record with seq ${head.seq} ${atHead === undefined ? 'is missing' : 'was changed'}: ${basename(path)}.head records another digest`,
    );
  } else {
    // Written after the head was last replaced (a crash between the two writes): chained, not anchored.
    report.head = { status: 'behind', seq: head.seq, unanchored: b.seq - head.seq };
    report.notChecked.push(
      `${b.seq - head.seq} record(s) after seq ${head.seq} are chained but not anchored by ${basename(path)}.head`,
    );
  }
  report.ok = true;
  return report;
}

/** The first line: a new chain (GENESIS), or the continuation of the predecessor it names. */
async function startLink(path: string, s: Line, report: VerifyReport): Promise<VerifyProblem | undefined> {
  if (!s.prevLog) {
    if (s.prev !== GENESIS || s.seq !== 1)
      return {
        line: s.n,
        kind: 'edited',
        reason: `a log-start without a predecessor must be seq 1 with the genesis prev (found seq ${s.seq})`,
      };
    return undefined;
  }
  report.predecessor = { log: s.prevLog, status: 'not checked' };
  const pred = join(dirname(path), basename(s.prevLog));
  if (!(await logExists(pred))) {
    report.notChecked.push(
      `the predecessor log ${s.prevLog} is not beside it: the link to it was not checked`,
    );
    return undefined;
  }
  const tail = await readTail(pred).catch(() => undefined);
  if (!tail || tail.digest !== s.prev || tail.seq === undefined || tail.seq + 1 !== s.seq) {
    report.predecessor.status = 'broken';
    return {
      line: s.n,
      kind: 'edited',
      reason: `does not continue ${s.prevLog}: its prev/seq do not match that log's last line (${tail ? `seq ${tail.seq}` : 'unreadable'})`,
    };
  }
  report.predecessor.status = 'ok';
  return undefined;
}
