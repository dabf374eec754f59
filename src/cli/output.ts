import { CodedError, toPlainError, type PlainError } from '../errors.js';

/** Exit codes shared by every command. */
export const EXIT = {
  OK: 0,
  /** A verification ran and found the input invalid (bad signature, tampered file). */
  INVALID: 1,
  /** The command could not do its job: bad input format, config, usage, I/O. */
  ERROR: 2,
} as const;

export interface OutputOptions {
  json?: boolean;
}

/**
 * A dry run writes nothing, so its report names no `output` file: the path a real run would write is
 * `plannedOutput` (absent when there is none, e.g. `sign-locale --dry-run` without -o).
 */
export function withoutOutput<T extends { output?: string }>(
  v: T,
  planned: string | undefined,
): Omit<T, 'output'> & { plannedOutput?: string } {
  const { output: _written, ...rest } = v;
  return { ...rest, ...(planned !== undefined ? { plannedOutput: planned } : {}) };
}

/** Print a result either as JSON (one document on stdout) or with a human renderer. */
export function emit<T>(opts: OutputOptions, value: T, human: (v: T) => string): void {
  if (opts.json) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  else {
    const text = human(value);
    if (text) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }
}

/**
 * An error's first message line without its code: Node's errors start their message with it
 * (`ENOENT: no such file…`), which would read `marsign: ENOENT: ENOENT: …`.
 */
export function errorLine(p: Pick<PlainError, 'code' | 'message'>): string {
  const line = p.message.split('\n')[0] ?? '';
  return line.startsWith(`${p.code}: `) ? line.slice(p.code.length + 2) : line;
}

/**
 * Report an error: `marsign: CODE: one-line reason` on stderr (or a JSON error document on stdout
 * with --json), and set the exit code. Stack traces only with MARSIGN_DEBUG=1.
 */
export function reportError(err: unknown, opts: OutputOptions = {}): void {
  const p = toPlainError(err);
  if (opts.json) process.stdout.write(JSON.stringify({ ok: false, error: p }, null, 2) + '\n');
  process.stderr.write(`marsign: ${p.code}: ${errorLine(p)}\n`);
  if (process.env.MARSIGN_DEBUG === '1' && err instanceof Error && err.stack)
    process.stderr.write(err.stack + '\n');
  process.exitCode =
    err instanceof CodedError && err.name === 'VerificationError' ? EXIT.INVALID : EXIT.ERROR;
}

/** Wrap a yargs handler so typed errors become a one-line message and a non-zero exit code. */
export function handler<A extends OutputOptions>(
  fn: (argv: A) => Promise<void> | void,
): (argv: A) => Promise<void> {
  return async (argv: A) => {
    try {
      await fn(argv);
    } catch (err) {
      reportError(err, argv);
    }
  };
}
