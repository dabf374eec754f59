/**
 * Stage 5, report: the locale manifest (`<output>.manifest.json`), from the entry records and the
 * finished output's digests; totals are counted from the records, so they always agree with them.
 */
import type { ContainerName } from '../archive/types.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { Confinement } from '../io/confine.js';
import { VERSION } from '../version.js';
import type { EntryAction, EntryRecord, LocaleManifest, LocaleTotals } from './types.js';

export function manifestPath(output: string): string {
  return `${output}.manifest.json`;
}

export function localeTotals(
  records: readonly EntryRecord[],
  inputBytes: number,
  outputBytes: number,
): LocaleTotals {
  const n = (a: EntryAction): number => records.filter((r) => r.action === a).length;
  const signed = n('signed');
  const shared = n('shared');
  const cached = n('cached');
  return {
    entries: records.length,
    passthrough: n('passthrough'),
    signed,
    shared,
    cached,
    skippedInvalid: n('skipped-invalid'),
    passthroughDecoded: records.filter((r) => r.action === 'passthrough' && r.check === 'decoded').length,
    signOperations: signed,
    hits: shared + cached,
    misses: signed,
    inputBytes,
    outputBytes,
  };
}

export interface ManifestParts {
  input: string;
  output: string;
  container: ContainerName;
  profile: string;
  dryRun: boolean;
  digests?: { sha256: string; sha512: string; size: number };
  outputCache?: 'hit' | 'miss';
  /** Whether the run checked passthrough entries (each record's `check` says how it went). */
  verifyPassthrough: boolean;
  records: EntryRecord[];
  warnings?: string[];
  inputBytes: number;
  timings: LocaleManifest['timings'];
}

/**
 * A manifest's output digests under either spelling: manifests written before 0.2 (a remote server, a
 * file on disk) have only the deprecated snake_case names.
 */
export function outputDigests(m: LocaleManifest): { sha256?: string; sha512?: string } {
  const sha256 = m.outputSha256 ?? m.output_sha256;
  const sha512 = m.outputSha512 ?? m.output_sha512;
  return { ...(sha256 ? { sha256 } : {}), ...(sha512 ? { sha512 } : {}) };
}

export function buildManifest(p: ManifestParts): LocaleManifest {
  return {
    marsignVersion: VERSION,
    input: p.input,
    output: p.output,
    container: p.container,
    profile: p.profile,
    dryRun: p.dryRun,
    ...(p.digests
      ? {
          outputSha256: p.digests.sha256,
          outputSha512: p.digests.sha512,
          outputSize: p.digests.size,
          // Deprecated spellings (README "Conventions"): scripts written against 0.1 read these.
          output_sha256: p.digests.sha256,
          output_sha512: p.digests.sha512,
        }
      : {}),
    ...(p.outputCache ? { outputCache: p.outputCache } : {}),
    passthroughVerified:
      p.verifyPassthrough &&
      !p.dryRun &&
      p.records.every((r) => r.action !== 'passthrough' || r.check === 'decoded' || r.check === 'cached'),
    entries: p.records,
    ...(p.warnings?.length ? { warnings: p.warnings } : {}),
    totals: localeTotals(p.records, p.inputBytes, p.digests?.size ?? 0),
    timings: p.timings,
  };
}

export function writeManifest(manifest: LocaleManifest, confine?: Confinement): Promise<void> {
  return writeFileAtomic(
    manifestPath(manifest.output),
    JSON.stringify(manifest, null, 2) + '\n',
    0o644,
    confine ? { confine } : {},
  );
}
