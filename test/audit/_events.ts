import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AuditEvent, AuditRecord } from '../../src/audit/types.js';

export const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** A signing event with distinct digests and entry name per `i`. */
export function fakeEvent(i: number | string, over: Partial<AuditEvent> = {}): AuditEvent {
  const n = typeof i === 'number' ? i : 0;
  return {
    time: new Date(1_700_000_000_000 + n * 1000).toISOString(),
    op: 'authenticode',
    client: 'cli:test',
    release: 'rel-1',
    locale: `l${n % 4}`,
    container: 'mar',
    entry: `bin/entry-${i}.dll`,
    action: 'signed',
    cache: 'miss',
    inputSha256: sha(`in ${i}`),
    outputSha256: sha(`out ${i}`),
    profile: 'dev',
    fingerprint: sha('profile'),
    keys: [{ id: sha('key') }],
    tsa: null,
    host: 'test-host',
    version: '0.0.0',
    ...over,
  };
}

/** The signing records of a log (every line but the log-start). */
export function records(log: string): AuditRecord[] {
  return readFileSync(log, 'utf8')
    .split('\n')
    .slice(1, -1)
    .map((l) => JSON.parse(l) as AuditRecord);
}
