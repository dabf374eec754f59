/**
 * The audit log file: append-only JSON lines, hash-chained (docs/ARCHITECTURE.md "Audit").
 *
 * Many processes may append to one log (several `marsign sign-locale` at once, the service's drainer):
 * each append takes the log's lock (proper-lockfile: a `<log>.lock` directory, stale after 10 s), reads
 * the last line (its digest and seq are the chain's tail), writes its records in one write, fsyncs, then
 * replaces `<log>.head` (the last record's seq and digest), which anchors the end of the chain: without
 * it an edited or removed last line could not be told from an intact one.
 *
 * The first line of every log file is a `log-start` record naming its predecessor (after a rotation) or
 * none (a new chain, prev = GENESIS). A log past `rotateBytes` is renamed `<name>.<time>-<seq>.jsonl` and
 * a new one continues the chain (seq goes on; its log-start's prev is the old log's last digest).
 */
import { mkdir, open, readFile, rename, stat, type FileHandle } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import lockfile from 'proper-lockfile';
import type { LoadedConfig } from '../config/types.js';
import { ConfigError, CodedError, TransientError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { lineDigest, MAX_RECORD_BYTES, parseRecord, serializeLogStart, serializeRecord } from './record.js';
import {
  GENESIS,
  type AnyAuditRecord,
  type AuditErrorCode,
  type AuditEvent,
  type AuditWriter,
} from './types.js';

/** Overrides the default log location (the config's `audit.log` still wins). */
export const AUDIT_LOG_ENV = 'MARSIGN_AUDIT_LOG';
/** A log past this size is rotated before the next append (config `audit.rotateBytes`). */
export const DEFAULT_ROTATE_BYTES = 256 * 1024 * 1024;
/** How long an append waits for another process's lock before failing (ms, roughly). */
const LOCK_WAIT_MS = 30_000;

/**
 * The log a config names: `audit.log` (relative to the config file), else $MARSIGN_AUDIT_LOG, else
 * $XDG_STATE_HOME/marsign/audit.jsonl (XDG: only an absolute value counts), else
 * ~/.local/state/marsign/audit.jsonl. Not the cache directory: a cache is disposable, a log is not.
 */
export function auditLogPath(config?: Pick<LoadedConfig, 'file' | 'dir'>, env = process.env): string {
  const configured = config?.file.audit?.log;
  if (configured) return isAbsolute(configured) ? configured : resolve(config!.dir, configured);
  if (env[AUDIT_LOG_ENV]) return resolve(env[AUDIT_LOG_ENV]);
  const xdg = env.XDG_STATE_HOME;
  const state = xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.local', 'state');
  return join(state, 'marsign', 'audit.jsonl');
}

export function headPath(log: string): string {
  return `${log}.head`;
}

/** `<log>.head`: the last record written, so the end of the chain is anchored. */
export interface AuditHead {
  v: 1;
  log: string;
  seq: number;
  digest: string;
  time: string;
}

/** The end of a log file as found on disk. */
export interface LogTail {
  size: number;
  /** Last complete line's seq and digest (undefined: empty file). */
  seq?: number;
  digest?: string;
  record?: AnyAuditRecord;
  /** Bytes after the last newline (a torn write); seq/digest are then the last complete line's. */
  torn: number;
  /** Set by the writer: why the end does not match the head (rotate records it). */
  headProblem?: string;
}

function errno(e: unknown): string {
  const c = (e as NodeJS.ErrnoException)?.code;
  return typeof c === 'string' ? c : 'error';
}

/** Read the last line of a log (bounded: a line longer than MAX_RECORD_BYTES is corruption). */
export async function readTail(path: string): Promise<LogTail> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if (errno(e) === 'ENOENT') return { size: 0, torn: 0 };
    throw e;
  }
  try {
    const { size } = await fh.stat();
    if (size === 0) return { size, torn: 0 };
    const want = Math.min(size, 2 * MAX_RECORD_BYTES + 2);
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, size - want + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    const b = buf.subarray(0, got);
    const lastNl = b.lastIndexOf(0x0a);
    const torn = b.length - 1 - lastNl;
    if (lastNl < 0) {
      if (size === want) return { size, torn };
      throw corrupt(path, `its last ${want} bytes hold no line break`);
    }
    const start = b.lastIndexOf(0x0a, lastNl - 1) + 1;
    if (start === 0 && size !== want) throw corrupt(path, 'its last line is longer than a record may be');
    const line = b.subarray(start, lastNl);
    const parsed = parseRecord(line.toString('utf8'));
    if (typeof parsed === 'string') throw corrupt(path, `its last complete line is not a record (${parsed})`);
    return { size, seq: parsed.seq, digest: lineDigest(line), record: parsed, torn };
  } finally {
    await fh.close();
  }
}

function corrupt(path: string, why: string): CodedError {
  return new ConfigError(
    'AUDIT_LOG_CORRUPT' satisfies AuditErrorCode,
    `audit log ${path}: ${why}; check it with \`marsign audit verify ${path}\`, then start a new file with \`marsign audit rotate --log ${path}\``,
    { details: { log: path } },
  );
}

/** The name a rotated log gets: `<base>.<UTC time>-<last seq>.jsonl` beside it. */
function rotatedName(path: string, lastSeq: number, now = new Date()): string {
  const base = basename(path).replace(/\.jsonl$/, '');
  const t = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${base}.${t}-${lastSeq}.jsonl`;
}

export interface AuditLogOptions {
  rotateBytes?: number;
  /**
   * Check the log when opening (default true). Off only for `rotate`, which must open a log whose last
   * line is torn in order to recover it.
   */
  probe?: boolean;
}

export interface Appended {
  firstSeq: number;
  lastSeq: number;
  digest: string;
}

/**
 * The single writer of one log file per append (the lock makes it so across processes). `open` checks
 * everything an append needs — the directory, the lock, the tail — so a command fails before it signs.
 */
export class AuditLog implements AuditWriter {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly rotateBytes: number;

  private constructor(
    readonly path: string,
    options: AuditLogOptions,
  ) {
    this.rotateBytes = options.rotateBytes ?? DEFAULT_ROTATE_BYTES;
  }

  /** Open (create when new) the log at `path`; throws AUDIT_LOG_UNWRITABLE / AUDIT_LOG_CORRUPT. */
  static async open(path: string, options: AuditLogOptions = {}): Promise<AuditLog> {
    const log = new AuditLog(resolve(path), options);
    try {
      await mkdir(dirname(log.path), { recursive: true, mode: 0o750 });
    } catch (e) {
      throw new ConfigError(
        'AUDIT_LOG_UNWRITABLE' satisfies AuditErrorCode,
        `cannot create the audit log's directory ${dirname(log.path)}: ${errno(e)}; set "audit": { "log": … } in the config or $${AUDIT_LOG_ENV}`,
        { cause: e, details: { log: log.path } },
      );
    }
    if (options.probe !== false) await log.serial(() => log.locked(() => log.prepare()));
    return log;
  }

  /** Append events as records (in order), durably: written, fsynced, head updated. */
  async append(events: readonly AuditEvent[]): Promise<void> {
    await this.appendRecords(events);
  }

  async appendRecords(events: readonly AuditEvent[]): Promise<Appended | undefined> {
    if (events.length === 0) return undefined;
    return this.serial(() =>
      this.locked(async () => {
        let tail = await this.prepare();
        if (tail.size >= this.rotateBytes) tail = await this.rotateLocked('size');
        let seq = tail.seq!;
        let prev = tail.digest!;
        const lines: string[] = [];
        for (const e of events) {
          const line = serializeRecord({ v: 1, seq: ++seq, prev }, e);
          prev = lineDigest(line);
          lines.push(line);
        }
        await this.write(lines.join('\n') + '\n');
        await this.writeHead(seq, prev);
        return { firstSeq: tail.seq! + 1, lastSeq: seq, digest: prev };
      }),
    );
  }

  /**
   * Close this log file and continue the chain in a new one: the old file is renamed beside it
   * (`<name>.<time>-<seq>.jsonl`) and kept as it is; the new one starts with a log-start naming it. A
   * log whose last line was torn (a crash mid-write) is rotated this way too: its complete lines stay
   * chained, the new log's log-start says why.
   */
  rotate(reason = 'rotated'): Promise<{ rotatedTo: string; seq: number }> {
    return this.serial(() =>
      this.locked(async () => {
        const tail = await this.prepare(true);
        const next = await this.rotateLocked(reason, tail);
        return { rotatedTo: join(dirname(this.path), next.prevLog!), seq: next.seq! - 1 };
      }),
    );
  }

  /** Stream ids (`sid`) among the records in the last `maxBytes` of the log (the drainer's de-duplication). */
  async recentSids(maxBytes = 4 * 1024 * 1024): Promise<Set<string>> {
    const out = new Set<string>();
    let fh: FileHandle;
    try {
      fh = await open(this.path, 'r');
    } catch {
      return out;
    }
    try {
      const { size } = await fh.stat();
      const want = Math.min(size, maxBytes);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await fh.read(buf, 0, want, size - want);
      for (const line of buf.subarray(0, bytesRead).toString('utf8').split('\n')) {
        if (!line.includes('"sid"')) continue;
        const r = parseRecord(line);
        if (typeof r !== 'string' && r.op !== 'log-start' && r.sid) out.add(r.sid);
      }
    } finally {
      await fh.close();
    }
    return out;
  }

  /** One operation of this object at a time (the file lock is per process, not per call). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    let compromised: Error | undefined;
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(this.path, {
        realpath: false,
        stale: 10_000,
        retries: { retries: Math.ceil(LOCK_WAIT_MS / 250), factor: 1.2, minTimeout: 5, maxTimeout: 250 },
        onCompromised: (e) => (compromised = e),
      });
    } catch (e) {
      if (errno(e) === 'ELOCKED')
        throw new TransientError(
          'AUDIT_LOG_LOCKED' satisfies AuditErrorCode,
          `audit log ${this.path} stayed locked by another process for ${LOCK_WAIT_MS / 1000} s`,
          { cause: e, details: { log: this.path } },
        );
      throw new ConfigError(
        'AUDIT_LOG_UNWRITABLE' satisfies AuditErrorCode,
        `cannot lock the audit log ${this.path} (${errno(e)}): is its directory writable?`,
        { cause: e, details: { log: this.path } },
      );
    }
    try {
      const out = await fn();
      if (compromised)
        throw new TransientError(
          'AUDIT_WRITE_FAILED' satisfies AuditErrorCode,
          `the audit log's lock was lost while writing (${compromised.message})`,
          { details: { log: this.path } },
        );
      return out;
    } finally {
      await release().catch(() => undefined);
    }
  }

  /**
   * The tail, with the log created (log-start of a new chain) when it does not exist or is empty.
   * A torn last line is refused (allowTorn: rotate takes care of it).
   */
  private async prepare(allowTorn = false): Promise<LogTail> {
    let tail: LogTail;
    try {
      tail = await readTail(this.path);
    } catch (e) {
      if (e instanceof CodedError) throw e;
      throw new ConfigError(
        'AUDIT_LOG_UNWRITABLE' satisfies AuditErrorCode,
        `cannot read the audit log ${this.path}: ${errno(e)}`,
        {
          cause: e,
          details: { log: this.path },
        },
      );
    }
    if (tail.torn > 0 && !allowTorn)
      throw corrupt(this.path, `its last line is incomplete (${tail.torn} bytes after the last line break)`);
    if (tail.seq !== undefined) {
      // Appending to a log whose end no longer matches its head would chain the next record to a changed
      // or shortened log, and so hide the change from verify: refused (rotate keeps it, says why).
      const problem = await this.headProblem(tail);
      if (problem && !allowTorn) throw corrupt(this.path, problem);
      return problem ? { ...tail, headProblem: problem } : tail;
    }
    if (tail.size > 0 && !allowTorn) throw corrupt(this.path, 'it holds no complete record');
    // A new chain — unless a head says records were written here before (a deleted or emptied log).
    const head = await readHead(this.path).catch(() => ({ seq: 'an unknown number of' }));
    if (head)
      throw corrupt(
        this.path,
        `it is missing or empty, but ${headPath(this.path)} says ${head.seq} records were written`,
      );
    if (tail.size > 0) return tail;
    const line = serializeLogStart({ v: 1, seq: 1, prev: GENESIS }, { prevLog: null });
    await this.write(line + '\n', 'wx');
    const digest = lineDigest(line);
    await this.writeHead(1, digest);
    return { size: Buffer.byteLength(line) + 1, seq: 1, digest, torn: 0 };
  }

  /** Why the log's end does not match its head, or undefined when it does (a head behind is fine). */
  private async headProblem(tail: LogTail): Promise<string | undefined> {
    let head: AuditHead | undefined;
    try {
      head = await readHead(this.path);
    } catch {
      return `${basename(headPath(this.path))} is not a head file`;
    }
    if (!head) return `${basename(headPath(this.path))} is missing, so the end of the log cannot be checked`;
    if (head.seq > tail.seq!)
      return `it ends at seq ${tail.seq} but its head records seq ${head.seq}: records were removed from the end`;
    if (head.seq === tail.seq && head.digest !== tail.digest)
      return `its last line (seq ${tail.seq}) does not match its head: it was changed`;
    return undefined;
  }

  /** Rename the current file aside and start the next one (lock held). */
  private async rotateLocked(
    reason: string,
    tail?: LogTail,
  ): Promise<LogTail & { prevLog?: string | undefined }> {
    tail ??= await readTail(this.path);
    let { seq, digest } = tail;
    let why = reason;
    if (tail.torn > 0)
      why = `damaged: ${tail.torn} bytes after the last line break (an incomplete record) were left in the old log`;
    else if (tail.headProblem) why = `damaged: ${tail.headProblem}`;
    if (seq === undefined || digest === undefined)
      throw corrupt(this.path, 'it holds no complete record to continue the chain from');
    const name = rotatedName(this.path, seq);
    const to = join(dirname(this.path), name);
    await rename(this.path, to);
    await rename(headPath(this.path), headPath(to)).catch(() => undefined);
    const line = serializeLogStart({ v: 1, seq: ++seq, prev: digest }, { prevLog: name, reason: why });
    await this.write(line + '\n', 'wx');
    digest = lineDigest(line);
    await this.writeHead(seq, digest);
    return { size: Buffer.byteLength(line) + 1, seq, digest, torn: 0, prevLog: name };
  }

  private async write(text: string, flags = 'a'): Promise<void> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.path, flags, 0o640);
      await fh.write(text);
      await fh.sync();
    } catch (e) {
      throw new TransientError(
        'AUDIT_WRITE_FAILED' satisfies AuditErrorCode,
        `cannot write the audit log ${this.path}: ${errno(e)}`,
        {
          cause: e,
          details: { log: this.path },
        },
      );
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  private async writeHead(seq: number, digest: string): Promise<void> {
    const head: AuditHead = {
      v: 1,
      log: basename(this.path),
      seq,
      digest,
      time: new Date().toISOString(),
    };
    try {
      await writeFileAtomic(headPath(this.path), JSON.stringify(head) + '\n', 0o640);
    } catch (e) {
      throw new TransientError(
        'AUDIT_WRITE_FAILED' satisfies AuditErrorCode,
        `cannot write ${headPath(this.path)}: ${errno(e)}`,
        {
          cause: e,
          details: { log: this.path },
        },
      );
    }
  }
}

/** `<log>.head`, or undefined when absent; a present but unreadable head is reported as such. */
export async function readHead(log: string): Promise<AuditHead | undefined> {
  let text: string;
  try {
    text = await readFile(headPath(log), 'utf8');
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
  const h = JSON.parse(text) as AuditHead;
  if (h?.v !== 1 || !Number.isSafeInteger(h.seq) || typeof h.digest !== 'string')
    throw new Error('not a head file');
  return h;
}

/** Whether a log file exists (for messages). */
export async function logExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
