/**
 * The audit log's chain: written by AuditLog (with concurrent writers in other processes), checked by
 * verifyLog, and every way of breaking it — a removed, edited, swapped or cut line — is found at the
 * right line.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { findRecords } from '../../src/audit/find.js';
import { AuditLog, auditLogPath, headPath } from '../../src/audit/log.js';
import { auditKey, parseRecord, tsaDisplay } from '../../src/audit/record.js';
import type { AuditRecord } from '../../src/audit/types.js';
import { verifyLog } from '../../src/audit/verify.js';
import { validateConfig } from '../../src/config/validate.js';
import { CodedError } from '../../src/errors.js';
import { PROJECT_ROOT, tempDir, TSX_IMPORT } from '../helpers/env.js';
import { fakeEvent, sha } from './_events.js';

/** A log of a log-start + `n` records (seq 1..n+1), in a fresh directory. */
async function makeLog(n: number): Promise<string> {
  const path = join(tempDir('marsign-audit-'), 'audit.jsonl');
  const log = await AuditLog.open(path);
  // Several appends, as several locales would.
  for (let i = 0; i < n; i += 5)
    await log.append(Array.from({ length: Math.min(5, n - i) }, (_, k) => fakeEvent(i + k)));
  return path;
}

function lines(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n').slice(0, -1);
}

function writeLines(path: string, ls: string[], end = '\n'): void {
  writeFileSync(path, ls.join('\n') + end);
}

describe('audit log', () => {
  test('a log written in several appends verifies; every line chains to the one before', async () => {
    const path = await makeLog(12);
    const ls = lines(path);
    assert.equal(ls.length, 13);
    assert.equal((parseRecord(ls[0]!) as { op: string }).op, 'log-start');
    for (let i = 1; i < ls.length; i++) {
      const r = parseRecord(ls[i]!) as AuditRecord;
      assert.equal(r.seq, i + 1);
      assert.equal(r.prev, sha(ls[i - 1]!), `line ${i + 1} prev`);
    }
    const head = JSON.parse(readFileSync(headPath(path), 'utf8')) as { seq: number; digest: string };
    assert.deepEqual([head.seq, head.digest], [13, sha(ls[12]!)]);
    const r = await verifyLog(path);
    assert.equal(r.ok, true, JSON.stringify(r.problem));
    assert.deepEqual([r.lines, r.firstSeq, r.lastSeq, r.head.status], [13, 1, 13, 'ok']);
    assert.deepEqual(r.notChecked, []);
  });

  const cases: [string, (ls: string[]) => string[], number, string][] = [
    ['deleting a middle line', (ls) => ls.filter((_, i) => i !== 5), 6, 'missing'],
    ['deleting the first record after the log-start', (ls) => ls.filter((_, i) => i !== 1), 2, 'missing'],
    ['deleting the log-start', (ls) => ls.slice(1), 1, 'missing'],
    ['deleting the last line', (ls) => ls.slice(0, -1), 13, 'missing'],
    [
      'editing a field of a middle line',
      (ls) => ls.map((l, i) => (i === 6 ? l.replace('"client":"cli:test"', '"client":"mallory"') : l)),
      7,
      'edited',
    ],
    [
      "editing a middle line's prev as well (re-hashed from its predecessor's edit)",
      (ls) => ls.map((l, i) => (i === 6 ? l.replace(/"prev":"[0-9a-f]{64}"/, `"prev":"${sha('x')}"`) : l)),
      7,
      'edited',
    ],
    [
      'editing the last line',
      (ls) =>
        ls.map((l, i) => (i === ls.length - 1 ? l.replace('"action":"signed"', '"action":"cached"') : l)),
      13,
      'edited',
    ],
    [
      'swapping two lines',
      (ls) => {
        const o = [...ls];
        [o[4], o[5]] = [o[5]!, o[4]!];
        return o;
      },
      5,
      'reordered',
    ],
    ['a line that is not JSON', (ls) => ls.map((l, i) => (i === 3 ? l.slice(0, 40) : l)), 4, 'malformed'],
    ['an empty line inserted', (ls) => [...ls.slice(0, 8), '', ...ls.slice(8)], 9, 'malformed'],
  ];
  for (const [what, mutate, line, kind] of cases)
    test(`${what} is found at line ${line} (${kind})`, async () => {
      const path = await makeLog(12);
      writeLines(path, mutate(lines(path)));
      const r = await verifyLog(path);
      assert.equal(r.ok, false);
      assert.deepEqual([r.problem?.line, r.problem?.kind], [line, kind], r.problem?.reason);
    });

  test('a truncated last line (no line break) is found', async () => {
    const path = await makeLog(6);
    const text = readFileSync(path, 'utf8');
    writeFileSync(path, text.slice(0, text.length - 30));
    const r = await verifyLog(path);
    assert.deepEqual([r.ok, r.problem?.line, r.problem?.kind], [false, 7, 'truncated']);
  });

  test('a log cut at a line break is found through the head', async () => {
    const path = await makeLog(6);
    writeLines(path, lines(path).slice(0, 4));
    const r = await verifyLog(path);
    assert.deepEqual([r.ok, r.problem?.line, r.problem?.kind], [false, 5, 'missing']);
    assert.match(r.problem!.reason, /ends at seq 4 .* seq 7/);
  });

  test('without a head the end is reported as not checked; a head behind the log is chained but unanchored', async () => {
    const path = await makeLog(6);
    const head = readFileSync(headPath(path));
    writeFileSync(headPath(path), '');
    const bad = await verifyLog(path);
    assert.deepEqual([bad.ok, bad.problem?.kind], [false, 'unanchored']);
    // A head one append behind (a crash between the log's fsync and the head's rename).
    writeFileSync(headPath(path), head);
    const log = await AuditLog.open(path);
    await log.append([fakeEvent(100)]);
    writeFileSync(headPath(path), head);
    const behind = await verifyLog(path);
    assert.equal(behind.ok, true, behind.problem?.reason);
    assert.deepEqual([behind.head.status, behind.head.unanchored], ['behind', 1]);
    assert.match(behind.notChecked.join('\n'), /1 record\(s\) after seq 7 are chained but not anchored/);
    rmSync(headPath(path));
    const none = await verifyLog(path);
    assert.equal(none.ok, true);
    assert.equal(none.head.status, 'missing');
    assert.match(none.notChecked[0]!, /not anchored/);
  });

  test('a torn last line is refused for appending; rotate keeps it as found and continues the chain', async () => {
    const path = await makeLog(3);
    appendFileSync(path, '{"v":1,"seq":5,"prev":"');
    await assert.rejects(AuditLog.open(path), (e: CodedError) => e.code === 'AUDIT_LOG_CORRUPT');
    const log = await AuditLog.open(path, { probe: false });
    const { rotatedTo, seq } = await log.rotate();
    assert.equal(seq, 4);
    const old = await verifyLog(rotatedTo);
    assert.deepEqual([old.ok, old.problem?.kind], [false, 'truncated']);
    await log.append([fakeEvent(9)]);
    const cur = await verifyLog(path);
    assert.equal(cur.ok, true, cur.problem?.reason);
    assert.deepEqual([cur.firstSeq, cur.lastSeq, cur.predecessor.status], [5, 6, 'ok']);
    const start = JSON.parse(lines(path)[0]!) as { reason: string; prevLog: string };
    assert.match(start.reason, /damaged/);
  });

  test('rotation by size: the chain goes on in the next file; a changed predecessor breaks the link', async () => {
    const dir = tempDir('marsign-audit-');
    const path = join(dir, 'audit.jsonl');
    const log = await AuditLog.open(path, { rotateBytes: 4096 });
    for (let i = 0; i < 30; i++) await log.append([fakeEvent(i), fakeEvent(i + 100)]);
    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort();
    assert.ok(files.length >= 3, files.join(' '));
    let seqs = 0;
    for (const f of files) {
      const r = await verifyLog(join(dir, f));
      assert.equal(r.ok, true, `${f}: ${r.problem?.reason}`);
      seqs += r.lines;
      if (f !== 'audit.jsonl' && r.predecessor.log === null) assert.equal(r.firstSeq, 1);
    }
    assert.equal(seqs, 61 + files.length - 1, 'every record once, plus a log-start per file');
    const cur = await verifyLog(path);
    assert.equal(cur.predecessor.status, 'ok');
    // Change the predecessor's last line: the current log no longer continues it.
    const pred = join(dir, cur.predecessor.log!);
    const pl = lines(pred);
    pl[pl.length - 1] = pl[pl.length - 1]!.replace('"cli:test"', '"cli:other"');
    writeLines(pred, pl);
    const broken = await verifyLog(path);
    assert.deepEqual([broken.ok, broken.problem?.line, broken.predecessor.status], [false, 1, 'broken']);
    // find follows no rotation by itself; given every file it finds across them.
    const all = await findRecords(
      files.map((f) => join(dir, f)),
      { release: 'rel-1' },
    );
    assert.equal(all.length, 60);
  });

  test('an edited or removed last line is refused for appending (the next record would hide it); rotate says why', async () => {
    for (const [what, mutate, why] of [
      [
        'edited',
        (ls: string[]) => ls.map((l, i) => (i === ls.length - 1 ? l.replace('rel-1', 'rel-2') : l)),
        /was changed/,
      ],
      ['removed', (ls: string[]) => ls.slice(0, -1), /removed from the end/],
    ] as const) {
      const path = await makeLog(4);
      writeLines(path, mutate(lines(path)));
      await assert.rejects(
        AuditLog.open(path),
        (e: CodedError) => e.code === 'AUDIT_LOG_CORRUPT' && why.test(e.message),
        what,
      );
      const { rotatedTo } = await (await AuditLog.open(path, { probe: false })).rotate();
      assert.equal((await verifyLog(rotatedTo)).ok, false, `${what}: the old log still shows it`);
      const start = JSON.parse(lines(path)[0]!) as { reason: string };
      assert.match(start.reason, /^damaged: .*/);
      assert.match(start.reason, why);
    }
  });

  test('a removed log with its head left is refused, not silently restarted', async () => {
    const path = await makeLog(2);
    rmSync(path);
    await assert.rejects(AuditLog.open(path), (e: CodedError) => e.code === 'AUDIT_LOG_CORRUPT');
  });

  test('an unwritable location fails at open with AUDIT_LOG_UNWRITABLE', async () => {
    const dir = tempDir('marsign-audit-');
    writeFileSync(join(dir, 'file'), 'x');
    await assert.rejects(
      AuditLog.open(join(dir, 'file', 'audit.jsonl')),
      (e: CodedError) => e.code === 'AUDIT_LOG_UNWRITABLE',
    );
  });

  test('four processes appending at once keep one intact chain', async () => {
    const path = join(tempDir('marsign-audit-'), 'audit.jsonl');
    await AuditLog.open(path);
    const child = join(PROJECT_ROOT, 'test', 'audit', 'append-child.ts');
    const runs = Array.from(
      { length: 4 },
      (_, w) =>
        new Promise<number | null>((resolve) => {
          const p = spawn(process.execPath, ['--import', TSX_IMPORT, child, path, String(w), '25'], {
            stdio: ['ignore', 'ignore', 'inherit'],
          });
          p.on('exit', resolve);
        }),
    );
    assert.deepEqual(await Promise.all(runs), [0, 0, 0, 0]);
    const r = await verifyLog(path);
    assert.equal(r.ok, true, r.problem?.reason);
    assert.equal(r.lines, 1 + 4 * 25 * 2);
    const entries = lines(path)
      .slice(1)
      .map((l) => (JSON.parse(l) as AuditRecord).entry);
    assert.equal(new Set(entries).size, 200, 'every record written once');
  });

  test('find answers by input or output digest and by release', async () => {
    const path = await makeLog(10);
    const out = await findRecords([path], { sha256: sha('out 7').toUpperCase() });
    assert.deepEqual(
      out.map((f) => [f.line, f.matched, f.record.entry]),
      [[9, 'output', 'bin/entry-7.dll']],
    );
    const inp = await findRecords([path], { sha256: sha('in 3') });
    assert.deepEqual(
      inp.map((f) => [f.line, f.matched]),
      [[5, 'input']],
    );
    assert.equal((await findRecords([path], { release: 'rel-1' })).length, 10);
    assert.equal((await findRecords([path], { release: 'rel' })).length, 0);
    assert.equal((await findRecords([path], { sha256: sha('nothing') })).length, 0);
  });
});

describe('audit config', () => {
  const profiles = { p: { mar: { keys: ['k.pem'] } } };
  const rules: [string, unknown, string][] = [
    ['audit.log', { log: '' }, 'must be a non-empty string'],
    ['audit.rotateBytes', { rotateBytes: 1024 }, 'must be an integer in'],
    ['audit.maxBacklog', { maxBacklog: 0 }, 'must be an integer in'],
    ['audit.drain', { drain: 'yes' }, 'must be true or false'],
    ['audit.path', { path: 'x' }, 'is not a known field'],
  ];
  for (const [field, audit, rule] of rules)
    test(`${field}: ${rule}`, () => {
      assert.throws(
        () => validateConfig({ audit, profiles }, 'c.json'),
        (e: CodedError) =>
          e.code === 'CONFIG_INVALID' && e.details?.field === field && e.message.includes(rule),
      );
    });
  test('a full audit section is accepted', () => {
    const audit = { log: 'a.jsonl', rotateBytes: 65536, maxBacklog: 10, drain: false };
    assert.deepEqual(validateConfig({ audit, profiles }, 'c.json').audit, audit);
  });
});

describe('audit record fields', () => {
  test('a PKCS#11 key is named by its URI without the query (no PIN source); a file key by its id only', () => {
    const key = { id: 'ab'.repeat(32), uri: 'pkcs11:token=rel;object=codesign?pin-source=/etc/marsign/pin' };
    assert.deepEqual(auditKey(key as never), { id: key.id, uri: 'pkcs11:token=rel;object=codesign' });
    assert.deepEqual(auditKey({ id: key.id } as never), { id: key.id });
  });

  test('a timestamp authority is named without user info or query', () => {
    assert.equal(
      tsaDisplay('http://user:secret@tsa.example:8080/ts?apikey=k#x'),
      'http://tsa.example:8080/ts',
    );
    assert.equal(tsaDisplay(undefined), null);
  });

  test('the default log is under the XDG state dir, never the cache; the config and $MARSIGN_AUDIT_LOG win', () => {
    assert.equal(auditLogPath(undefined, { HOME: '/h', XDG_STATE_HOME: '/s' }), '/s/marsign/audit.jsonl');
    assert.equal(
      auditLogPath(undefined, { XDG_STATE_HOME: 'relative' }).endsWith('/.local/state/marsign/audit.jsonl'),
      true,
    );
    assert.equal(auditLogPath(undefined, { MARSIGN_AUDIT_LOG: '/x/a.jsonl' }), '/x/a.jsonl');
    assert.equal(
      auditLogPath(
        { dir: '/cfg', file: { profiles: {}, audit: { log: 'logs/a.jsonl' } } },
        { MARSIGN_AUDIT_LOG: '/x' },
      ),
      '/cfg/logs/a.jsonl',
    );
  });
});
