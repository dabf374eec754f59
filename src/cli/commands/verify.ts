import { readFile } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { FormatError, UsageError } from '../../errors.js';
import type { PeVerifyResult } from '../../signing/types.js';
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

interface InnerResult {
  name: string;
  valid: boolean;
  pe: PeVerifyResult;
}

interface VerifyReport {
  ok: boolean;
  file: string;
  type: 'mar' | 'pe';
  mar?: MarVerifyResult;
  pe?: PeVerifyResult;
  inner?: InnerResult[];
  skipped?: string[];
  problems: string[];
}

async function certsOf(path: string | undefined): Promise<Uint8Array[] | undefined> {
  if (path === undefined) return undefined;
  const text = await readFile(path).catch((e: NodeJS.ErrnoException) => {
    throw new UsageError('CERT_NOT_FOUND', `cannot read ${path}: ${e.code ?? 'error'}`);
  });
  const { pemCertificates } = await import('../../keys/pem.js');
  return pemCertificates(text);
}

/** A PE verifies when the digest matches, the signature verifies, the chain (if a CA was given) and a present timestamp verify. */
function peValid(r: PeVerifyResult): boolean {
  return (
    r.signed &&
    r.digestMatches &&
    r.signatureValid &&
    r.chainValid !== false &&
    (!r.timestamp?.present || r.timestamp.valid !== false)
  );
}

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
  const isMz = magic[0] === 0x4d && magic[1] === 0x5a;
  if (!isMar && !isMz)
    throw new FormatError(
      'verify',
      'UNKNOWN_FORMAT',
      `${argv.file} is neither a MAR ("MAR1") nor a PE ("MZ")`,
      0,
    );
  // Loaded on use: MAR-only verification does not need the Authenticode verifier.
  const verifyPe = async (bytes: Uint8Array): Promise<PeVerifyResult> =>
    (await import('../../signing/verify-pe.js')).verifyPe(bytes, peOpts);

  if (isMz) {
    const pe = await verifyPe(await readFile(argv.file));
    const ok = peValid(pe);
    return { ok, file: argv.file, type: 'pe', pe, problems: pe.problems };
  }

  const certs = argv['mar-cert'] ?? [];
  const inner = argv.inner ?? caCertsDer !== undefined;
  if (certs.length === 0 && !inner) {
    throw new UsageError(
      'NOTHING_TO_VERIFY',
      'give --mar-cert (MAR signatures) and/or --ca or --inner (inner PE signatures)',
    );
  }
  const report: VerifyReport = { ok: true, file: argv.file, type: 'mar', problems: [] };
  if (certs.length > 0) {
    const { verifyMar } = await import('../../signing/verify-mar.js');
    report.mar = await verifyMar(argv.file, certs);
    report.problems.push(...report.mar.problems);
    if (!report.mar.valid) report.ok = false;
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
    report.skipped = [];
    const mar = await FileSource.open(argv.file);
    try {
      const info = await readMar(mar, { allowSizeMismatch: true });
      for (const e of info.entries) {
        if (skip?.(e.name)) {
          report.skipped.push(e.name);
          continue;
        }
        const stored = await readEntryBytes(mar, e);
        const data = detectCodec(stored) === 'none' ? stored : await decompress(stored);
        if (!(data[0] === 0x4d && data[1] === 0x5a)) continue;
        const pe = await verifyPe(data);
        const valid = peValid(pe);
        report.inner.push({ name: e.name, valid, pe });
        if (!valid) {
          report.ok = false;
          report.problems.push(`${e.name}: ${pe.problems.join('; ') || 'Authenticode signature invalid'}`);
        }
      }
    } finally {
      await mar.close();
    }
  }
  return report;
}

function human(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.pe) lines.push(`${r.file}: PE ${peLine(r.pe)}`);
  if (r.mar) {
    r.mar.signatures.forEach((s, i) =>
      lines.push(
        `${r.file}: MAR signature ${i} (algorithm id ${s.algorithmId}): ${s.valid ? 'ok' : 'INVALID'}`,
      ),
    );
  }
  for (const e of r.inner ?? []) lines.push(`  ${e.name}: ${peLine(e.pe)}`);
  for (const p of r.problems) lines.push(`problem: ${p}`);
  lines.push(r.ok ? 'verification: OK' : 'verification: FAILED');
  return lines.join('\n');
}

function peLine(pe: PeVerifyResult): string {
  if (!pe.signed) return 'not signed';
  const parts = [
    `digest ${pe.digestMatches ? 'ok' : 'MISMATCH'}`,
    `signature ${pe.signatureValid ? 'ok' : 'INVALID'}`,
    `chain ${pe.chainValid === undefined ? 'not checked' : pe.chainValid ? 'ok' : 'INVALID'}`,
  ];
  if (pe.timestamp?.present)
    parts.push(
      `timestamp ${pe.timestamp.valid === false ? 'INVALID' : 'ok'}${pe.timestamp.time ? ` ${pe.timestamp.time}` : ''}`,
    );
  if (pe.signer) parts.push(`signer ${pe.signer.subject}`);
  return parts.join(', ');
}

export const verifyCommand: CommandModule<object, VerifyArgs> = {
  command: 'verify <file>',
  describe:
    "Verify a PE's Authenticode signature, or a MAR's signatures and its inner PEs (exit 1 if invalid)",
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
