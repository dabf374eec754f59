/**
 * Audit records: what a signing operation reports (events built from a locale's manifest, a signed PE,
 * a signed MAR) and the one serialisation of a record as a log line (a fixed key order, so the bytes a
 * writer produces for a record are always the same; the chain hashes the line as written).
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import type { SigningProfile } from '../config/types.js';
import type { SigningKey } from '../keys/types.js';
import { VERSION } from '../version.js';
import {
  AUDIT_RECORD_VERSION,
  type AnyAuditRecord,
  type AuditEvent,
  type AuditIdentity,
  type AuditKey,
  type AuditRecord,
  type ChainFields,
  type LocaleAuditRun,
  type LogStartRecord,
} from './types.js';

/** A record line longer than this is not one of ours (a reader refuses it; entry names are bounded). */
export const MAX_RECORD_BYTES = 64 * 1024;

/** Hex sha256 of a line's bytes (without its newline): the next record's `prev`. */
export function lineDigest(line: Uint8Array | string): string {
  return createHash('sha256').update(line).digest('hex');
}

/**
 * A key's public identity. A PKCS#11 key is named by its URI's path attributes only: the query part
 * (pin-source, module-path, and a pin-value no config may hold) never goes into a record.
 */
export function auditKey(key: SigningKey): AuditKey {
  const uri = (key as { uri?: unknown }).uri;
  if (typeof uri !== 'string' || !/^pkcs11:/i.test(uri)) return { id: key.id };
  const q = uri.indexOf('?');
  return { id: key.id, uri: q < 0 ? uri : uri.slice(0, q) };
}

/** A timestamp authority's URL for a record: scheme, host and path (no user info, query or fragment). */
export function tsaDisplay(url: string | undefined): string | null {
  if (!url) return null;
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return null;
  }
}

interface Common {
  client: string | null;
  release: string | null;
  locale: string | null;
  profile: string;
  fingerprint: string;
  host: string;
  version: string;
}

function common(profile: SigningProfile, id: AuditIdentity): Common {
  return {
    client: id.client ?? null,
    release: id.release ?? null,
    locale: id.locale ?? null,
    profile: profile.name,
    fingerprint: profile.fingerprint,
    host: hostname(),
    version: VERSION,
  };
}

function event(c: Common, e: Omit<AuditEvent, keyof Common>): AuditEvent {
  return {
    time: e.time,
    op: e.op,
    client: c.client,
    release: c.release,
    locale: c.locale,
    container: e.container,
    entry: e.entry,
    action: e.action,
    cache: e.cache,
    inputSha256: e.inputSha256,
    outputSha256: e.outputSha256,
    profile: c.profile,
    fingerprint: c.fingerprint,
    keys: e.keys,
    tsa: e.tsa,
    host: c.host,
    version: c.version,
    ...(e.input !== undefined ? { input: e.input } : {}),
    ...(e.output !== undefined ? { output: e.output } : {}),
  };
}

/**
 * The records of one produced locale: one per entry whose Authenticode signature is in the output
 * (signed here, shared within the run, or from the cache), then one for the whole output: its MAR
 * signature when one was made here, else how the output came to be (served whole from the cache, or
 * assembled unsigned). Passthrough and skipped entries are not signing operations and get none.
 */
export function localeEvents(run: LocaleAuditRun, time = new Date().toISOString()): AuditEvent[] {
  const { manifest: m, profile } = run;
  const c = common(profile, run);
  const out: AuditEvent[] = [];
  const authKey = profile.authenticode ? [auditKey(profile.authenticode.key)] : [];
  for (const e of m.entries) {
    if (e.action !== 'signed' && e.action !== 'shared' && e.action !== 'cached') continue;
    out.push(
      event(c, {
        time,
        op: 'authenticode',
        container: m.container,
        entry: e.name,
        action: e.action,
        cache: e.action === 'signed' ? 'miss' : 'hit',
        inputSha256: e.inputSha256,
        outputSha256: e.outputSha256,
        keys: authKey,
        tsa: tsaDisplay(e.tsa),
      }),
    );
  }
  // Only a MAR carries a container signature (zip has none): its keys, when the profile has MAR keys.
  const signedContainer = m.container === 'mar' && profile.mar !== undefined;
  const containerKeys = signedContainer ? profile.mar!.keys.map(auditKey) : [];
  const served = m.outputCache === 'hit';
  out.push(
    event(c, {
      time,
      op: served || !signedContainer ? 'output' : 'mar',
      container: m.container,
      entry: null,
      action: served ? 'served' : signedContainer ? 'signed' : 'assembled',
      cache: served ? 'hit' : 'miss',
      inputSha256: run.inputSha256,
      outputSha256: m.outputSha256 ?? '',
      keys: containerKeys,
      tsa: null,
      input: m.input,
      output: m.output,
    }),
  );
  return out;
}

/** The record of `marsign sign-pe`. */
export function peEvent(
  profile: SigningProfile,
  id: AuditIdentity,
  f: { input: string; output: string; inputSha256: string; outputSha256: string; tsa?: string | undefined },
): AuditEvent {
  return event(common(profile, id), {
    time: new Date().toISOString(),
    op: 'authenticode',
    container: 'pe',
    entry: null,
    action: 'signed',
    cache: 'miss',
    inputSha256: f.inputSha256,
    outputSha256: f.outputSha256,
    keys: profile.authenticode ? [auditKey(profile.authenticode.key)] : [],
    tsa: tsaDisplay(f.tsa),
    input: f.input,
    output: f.output,
  });
}

/** The record of `marsign sign-mar`. */
export function marEvent(
  profile: SigningProfile,
  id: AuditIdentity,
  f: { input: string; output: string; inputSha256: string; outputSha256: string },
): AuditEvent {
  return event(common(profile, id), {
    time: new Date().toISOString(),
    op: 'mar',
    container: 'mar',
    entry: null,
    action: 'signed',
    cache: 'miss',
    inputSha256: f.inputSha256,
    outputSha256: f.outputSha256,
    keys: profile.mar ? profile.mar.keys.map(auditKey) : [],
    tsa: null,
    input: f.input,
    output: f.output,
  });
}

/** The line of a signing record: chain fields first, then the event's fields in their fixed order. */
export function serializeRecord(chain: ChainFields, e: AuditEvent): string {
  const r: AuditRecord = {
    v: AUDIT_RECORD_VERSION,
    seq: chain.seq,
    prev: chain.prev,
    ...event(
      {
        client: e.client,
        release: e.release,
        locale: e.locale,
        profile: e.profile,
        fingerprint: e.fingerprint,
        host: e.host,
        version: e.version,
      },
      e,
    ),
    ...(e.sid !== undefined ? { sid: e.sid } : {}),
  };
  return JSON.stringify(r);
}

/** The line of a log's first record. */
export function serializeLogStart(
  chain: ChainFields,
  s: { prevLog: string | null; reason?: string | undefined; time?: string },
): string {
  const r: LogStartRecord = {
    v: AUDIT_RECORD_VERSION,
    seq: chain.seq,
    prev: chain.prev,
    time: s.time ?? new Date().toISOString(),
    op: 'log-start',
    prevLog: s.prevLog,
    ...(s.reason !== undefined ? { reason: s.reason } : {}),
    host: hostname(),
    version: VERSION,
  };
  return JSON.stringify(r);
}

const HEX64 = /^[0-9a-f]{64}$/;
const OPS = new Set(['authenticode', 'mar', 'output']);
const ACTIONS = new Set(['signed', 'shared', 'cached', 'served', 'assembled']);

const isStr = (v: unknown): v is string => typeof v === 'string';
const strOrNull = (v: unknown): boolean => v === null || typeof v === 'string';

/**
 * A parsed line as a record, or the reason it is not one (a verifier reports the line). Checks the
 * shape only; the chain is the verifier's.
 */
export function parseRecord(line: string): AnyAuditRecord | string {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'not a JSON object';
  const r = doc as Record<string, unknown>;
  if (r.v !== AUDIT_RECORD_VERSION) return `unknown record version ${JSON.stringify(r.v)}`;
  if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 1) return 'seq is not a positive integer';
  if (!isStr(r.prev) || !HEX64.test(r.prev)) return 'prev is not a sha256';
  if (!isStr(r.time)) return 'time is missing';
  if (r.op === 'log-start') {
    if (!strOrNull(r.prevLog)) return 'prevLog is not a file name';
    return r as unknown as LogStartRecord;
  }
  if (!OPS.has(r.op as string)) return `unknown op ${JSON.stringify(r.op)}`;
  if (!ACTIONS.has(r.action as string)) return `unknown action ${JSON.stringify(r.action)}`;
  if (r.cache !== 'hit' && r.cache !== 'miss') return 'cache is not hit/miss';
  for (const k of ['client', 'release', 'locale', 'entry', 'tsa'])
    if (!strOrNull(r[k])) return `${k} is not a string or null`;
  for (const k of ['container', 'profile', 'fingerprint', 'host', 'version', 'inputSha256', 'outputSha256'])
    if (!isStr(r[k])) return `${k} is missing`;
  if (!Array.isArray(r.keys) || !r.keys.every((k) => typeof k === 'object' && k && isStr(k.id)))
    return 'keys is not a list of keys';
  return r as unknown as AuditRecord;
}
