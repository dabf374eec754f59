import { readFile } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { FormatError, UsageError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import type { CheckStatus } from '../../signing/check.js';
import type { PeSignatureResult, PeVerifyResult } from '../../signing/types.js';
import type { MarVerifyResult } from '../../signing/verify-mar.js';
import { emit, EXIT, handler } from '../output.js';

interface VerifyArgs {
  file: string;
  ca?: string;
  'tsa-ca'?: string;
  'mar-cert'?: string[];
  inner?: boolean;
  skip?: string[];
  json?: boolean;
}

/** An inner PE entry's Authenticode result. `valid` is the verdict (as `ok` for the whole file). */
interface InnerResult {
  name: string;
  valid: boolean;
  status: CheckStatus;
  pe: PeVerifyResult;
}

/** Every entry of a MAR verified with --inner, in MAR order. */
interface EntryResult {
  name: string;
  status: CheckStatus;
  /** Why it is not checked, or what is invalid. */
  reason?: string;
  /** The typed error that made a corrupt entry invalid (e.g. CODEC_CORRUPT). */
  error?: { code: string; message: string };
}

interface VerifyReport {
  /** The verdict (exit 0): nothing invalid, and every check that was asked for was made. */
  ok: boolean;
  /** Worst of every check: `ok` only when everything was checked and held. */
  status: CheckStatus;
  file: string;
  type: 'mar' | 'pe';
  mar?: MarVerifyResult;
  pe?: PeVerifyResult;
  inner?: InnerResult[];
  entries?: EntryResult[];
  skipped?: string[];
  /** What was not checked and why, one line each. */
  notChecked: string[];
  problems: string[];
}

async function certsOf(path: string | undefined): Promise<Uint8Array[] | undefined> {
  if (path === undefined) return undefined;
  const text = await readFile(path).catch((e: NodeJS.ErrnoException) => {
    throw new UsageError(
      'CERT_NOT_FOUND' satisfies CliErrorCode,
      `cannot read ${path}: ${e.code ?? 'error'}`,
    );
  });
  const { pemCertificates } = await import('../../keys/pem.js');
  return pemCertificates(text);
}

const isMzStart = (b: Uint8Array): boolean => b[0] === 0x4d && b[1] === 0x5a;

export async function verifyFile(argv: VerifyArgs): Promise<VerifyReport> {
  const caCertsDer = await certsOf(argv.ca);
  const tsaCaCertsDer = await certsOf(argv['tsa-ca']);
  const peOpts = { ...(caCertsDer ? { caCertsDer } : {}), ...(tsaCaCertsDer ? { tsaCaCertsDer } : {}) };
  const { FileSource } = await import('../../io/byte-source.js');
  const src = await FileSource.open(argv.file);
  let magic: Uint8Array;
  try {
    magic = src.size >= 4 ? await src.read(0, 4) : new Uint8Array();
  } finally {
    await src.close();
  }
  const isMar = Buffer.from(magic).toString('latin1') === 'MAR1';
  const isMz = isMzStart(magic);
  if (!isMar && !isMz)
    throw new FormatError(
      'verify',
      'UNKNOWN_FORMAT' satisfies CliErrorCode,
      `${argv.file} is neither a MAR ("MAR1") nor a PE ("MZ")`,
      0,
    );
  // Loaded on use: MAR-only verification does not need the Authenticode verifier.
  const pe = await import('../../signing/verify-pe.js');
  const verifyPe = (bytes: Uint8Array): PeVerifyResult => pe.verifyPe(bytes, peOpts);

  if (isMz) {
    const r = verifyPe(await readFile(argv.file));
    return {
      ok: pe.peVerifyOk(r),
      status: r.status,
      file: argv.file,
      type: 'pe',
      pe: r,
      notChecked: r.notChecked,
      problems: r.problems,
    };
  }

  const certs = argv['mar-cert'] ?? [];
  const inner = argv.inner ?? caCertsDer !== undefined;
  if (certs.length === 0 && !inner) {
    throw new UsageError(
      'NOTHING_TO_VERIFY' satisfies CliErrorCode,
      'give --mar-cert (MAR signatures) and/or --ca or --inner (inner PE signatures)',
    );
  }
  const report: VerifyReport = {
    ok: true,
    status: 'ok',
    file: argv.file,
    type: 'mar',
    notChecked: [],
    problems: [],
  };
  const statuses: CheckStatus[] = [];
  // MAR signatures first: they cover every entry, so they are reported even when an entry is corrupt.
  if (certs.length > 0) {
    const { verifyMar } = await import('../../signing/verify-mar.js');
    report.mar = await verifyMar(argv.file, certs);
    report.problems.push(...report.mar.problems);
    statuses.push(report.mar.status);
    if (!report.mar.valid) report.ok = false;
  } else {
    report.notChecked.push('MAR signatures: no --mar-cert given');
    statuses.push('not checked');
  }
  if (inner) {
    const [{ default: picomatch }, { decompress, detectCodec }, { readEntryBytes, readMar }] =
      await Promise.all([
        import('picomatch'),
        import('../../codecs/index.js'),
        import('../../formats/mar/index.js'),
      ]);
    const skip = argv.skip?.length ? picomatch(argv.skip, { dot: true }) : undefined;
    report.inner = [];
    report.entries = [];
    report.skipped = [];
    let notPe = 0;
    const mar = await FileSource.open(argv.file);
    try {
      const info = await readMar(mar, { allowSizeMismatch: true });
      for (const e of info.entries) {
        const entry = (r: Omit<EntryResult, 'name'>): void => {
          report.entries!.push({ name: e.name, ...r });
          statuses.push(r.status);
        };
        if (skip?.(e.name)) {
          report.skipped.push(e.name);
          entry({ status: 'not checked', reason: 'skipped (--skip)' });
          continue;
        }
        // A corrupt or malformed entry is this entry's verdict, not the end of the run: the
        // others are still checked and the MAR signatures above stay reported.
        let result: PeVerifyResult | undefined;
        try {
          const stored = await readEntryBytes(mar, e);
          const data = detectCodec(stored) === 'none' ? stored : await decompress(stored);
          if (isMzStart(data)) result = verifyPe(data);
        } catch (err) {
          if (!(err instanceof FormatError)) throw err;
          const reason = `${err.code}: ${err.message}`;
          entry({ status: 'invalid', reason, error: { code: err.code, message: err.message } });
          report.problems.push(`${e.name}: ${reason}`);
          report.ok = false;
          continue;
        }
        if (!result) {
          notPe++;
          entry({ status: 'not checked', reason: 'not a PE' });
          continue;
        }
        const valid = pe.peVerifyOk(result);
        report.inner.push({ name: e.name, valid, status: result.status, pe: result });
        const why = result.status === 'invalid' ? result.problems : result.notChecked;
        entry({ status: result.status, ...(why.length ? { reason: why.join('; ') } : {}) });
        report.notChecked.push(...result.notChecked.map((n) => `${e.name}: ${n}`));
        if (!valid) {
          report.ok = false;
          report.problems.push(
            `${e.name}: ${result.problems.join('; ') || 'Authenticode signature invalid'}`,
          );
        }
      }
    } finally {
      await mar.close();
    }
    if (notPe > 0)
      report.notChecked.push(
        `${notPe} ${notPe === 1 ? 'entry is not a PE' : 'entries are not PEs'} (no Authenticode signature)`,
      );
    if (report.skipped.length > 0)
      report.notChecked.push(
        `${report.skipped.length} entr${report.skipped.length === 1 ? 'y' : 'ies'} skipped (--skip)`,
      );
  } else {
    report.notChecked.push('inner PE signatures: no --ca or --inner given');
    statuses.push('not checked');
  }
  report.status = (await import('../../signing/check.js')).worstStatus(statuses);
  return report;
}

const STATUS_WORD: Record<CheckStatus, string> = {
  ok: 'ok',
  invalid: 'INVALID',
  'not checked': 'not checked',
};

function human(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.pe) lines.push(...peLines(`${r.file}: PE`, r.pe, ''));
  if (r.type === 'mar' && !r.mar) lines.push(`${r.file}: MAR signatures not checked (no --mar-cert given)`);
  for (const s of r.mar?.signatures ?? [])
    lines.push(
      `${r.file}: MAR signature ${s.index} (algorithm id ${s.algorithmId}): ${STATUS_WORD[s.status]}`,
    );
  const inner = new Map((r.inner ?? []).map((e) => [e.name, e]));
  for (const e of r.entries ?? []) {
    const pe = inner.get(e.name);
    if (pe) lines.push(...peLines(`  ${e.name}:`, pe.pe, '  '));
    else if (e.status === 'invalid') lines.push(`  ${e.name}: INVALID (${e.reason ?? 'unreadable'})`);
  }
  for (const p of r.problems) lines.push(`problem: ${p}`);
  for (const n of notCheckedLines(r)) lines.push(`not checked: ${n}`);
  lines.push(r.ok ? 'verification: OK' : 'verification: FAILED');
  return lines.join('\n');
}

/** What was not checked; the same gap in many inner PEs is one line naming how many. */
function notCheckedLines(r: VerifyReport): string[] {
  const byWhat = new Map<string, string[]>();
  const fromInner = new Set<string>();
  for (const e of r.inner ?? [])
    for (const n of e.pe.notChecked) {
      fromInner.add(`${e.name}: ${n}`);
      byWhat.set(n, [...(byWhat.get(n) ?? []), e.name]);
    }
  const grouped = [...byWhat].map(([what, names]) =>
    names.length === 1 ? `${names[0]}: ${what}` : `${what} (${names.length} entries: ${names[0]}, ...)`,
  );
  return [...r.notChecked.filter((n) => !fromInner.has(n)), ...grouped];
}

/** One line per PE with one signature; a header and one line per signature otherwise. */
function peLines(head: string, pe: PeVerifyResult, indent: string): string[] {
  if (!pe.signed) return [`${head} not signed`];
  if (pe.signatures.length === 1) return [`${head} ${signatureLine(pe.signatures[0]!)}`];
  return [
    `${head} ${pe.signatures.length} signatures`,
    ...pe.signatures.map(
      (s) =>
        `${indent}  signature ${s.index} (entry ${s.entry}${s.nested ? ', nested' : ''}): ${signatureLine(s)}`,
    ),
  ];
}

function signatureLine(s: PeSignatureResult): string {
  const c = s.checks;
  const parts = [
    `digest ${STATUS_WORD[c.digest.status]}`,
    `signature ${STATUS_WORD[c.signature.status]}`,
    `chain ${STATUS_WORD[c.chain.status]}`,
  ];
  if (c.timestamp)
    parts.push(
      `timestamp ${STATUS_WORD[c.timestamp.status]}${c.timestamp.time ? ` ${c.timestamp.time}` : ''}`,
    );
  else parts.push('no timestamp');
  if (c.nestedSignatures) parts.push(`nested signatures ${STATUS_WORD[c.nestedSignatures.status]}`);
  if (s.digestAlgorithm) parts.push(s.digestAlgorithm);
  if (s.signer) parts.push(`signer ${s.signer.subject}`);
  return parts.join(', ');
}

export const verifyCommand: CommandModule<object, VerifyArgs> = {
  command: 'verify <file>',
  describe:
    "Verify a PE's Authenticode signatures, or a MAR's signatures and its inner PEs; each check is ok, invalid or not checked (exit 1 if any is invalid)",
  builder: (y: Argv) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'MAR or PE file' })
      .option('ca', { type: 'string', describe: 'PEM CA certificate(s) the Authenticode chain must lead to' })
      .option('tsa-ca', { type: 'string', describe: 'PEM CA certificate(s) for timestamp tokens' })
      .option('mar-cert', {
        type: 'string',
        array: true,
        describe: 'MAR certificate or public key (DER/PEM), one per signature, in signature order',
      })
      .option('inner', {
        type: 'boolean',
        describe: "Verify every inner PE entry's Authenticode signature (default: on when --ca is given)",
      })
      .option('skip', { type: 'string', array: true, describe: 'Globs of inner entries not to verify' })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'Print one JSON document',
      }) as Argv<VerifyArgs>,
  handler: handler<VerifyArgs>(async (argv) => {
    const r = await verifyFile(argv);
    emit(argv, r, human);
    if (!r.ok) process.exitCode = EXIT.INVALID;
  }),
};
