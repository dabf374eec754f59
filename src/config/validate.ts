import {
  backendSectionFields,
  backendTopFields,
  validateKeySection,
  validateKeyTop,
} from '../keys/registry.js';
import { MIN_MEMORY_BUDGET } from '../pipeline/budget.js';
import { CLIENT_SCOPES, type ConfigFile, type PolicyFile, type ProfileFile } from './types.js';
import { ENV_NAME, Validator, type Obj } from './validator.js';

/** Bounds of `limits.*`: an entry cap up to 2 GiB (the WASM heap limit), a ratio of 10..10^6. */
export const MAX_ENTRY_SIZE_LIMIT = 2 * 1024 * 1024 * 1024;
export const MIN_ENTRY_SIZE_LIMIT = 1024 * 1024;
export const RATIO_LIMIT_RANGE = [10, 1_000_000] as const;
/** `limits.memoryBudget`: 1 MiB (MIN_MEMORY_BUDGET) up to 1 TiB. */
export const MAX_MEMORY_BUDGET = 2 ** 40;
/** Smallest `audit.rotateBytes`: a log holds at least a few hundred records. */
export const MIN_AUDIT_ROTATE_BYTES = 64 * 1024;

/**
 * Structural validation of the whole config file, up front (CONVENTIONS §10): every rule names the
 * field path. Values are quoted only when they cannot be secrets (enums, numbers); unknown keys are
 * named without their value, since a misplaced inline passphrase is the likeliest unknown key.
 */

const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** No "." (session cookies use it as a separator) and no ":" (`cli:<user>` names CLI submitters). */
export const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const SHA256_HEX = /^[0-9a-fA-F]{64}$/;
export const MAX_CLIENTS = 256;
/** libmar MAX_SIGNATURES (mar-format.md §3). */
export const MAX_MAR_KEYS = 8;
export const MAX_TIMESTAMP_URLS = 8;

export function validateConfig(raw: unknown, file: string): ConfigFile {
  const v = new Validator(file);
  const top = v.object(raw, '', [
    'cache',
    'redis',
    'server',
    'limits',
    'audit',
    'profiles',
    ...backendTopFields(),
  ]);
  validateKeyTop(v, top);
  if (top.cache !== undefined) {
    const c = v.object(top.cache, 'cache', ['dir', 'hmacSecretEnv', 'hmacSecretFile', 'outputs']);
    v.string(c, 'dir', 'cache');
    v.bool(c, 'outputs', 'cache');
    v.secretRef(c, 'hmacSecret', 'cache');
  }
  if (top.redis !== undefined) {
    const r = v.object(top.redis, 'redis', ['url', 'passwordEnv', 'tls', 'prefix']);
    const url = v.string(r, 'url', 'redis');
    if (url !== undefined && !/^rediss?:\/\/[^\s]+$/.test(url))
      v.fail('redis.url', 'must be a redis:// or rediss:// URL');
    if (url !== undefined && /^rediss?:\/\/[^/@]*:[^/@]*@/.test(url)) {
      v.fail('redis.url', 'must not contain a password: use redis.passwordEnv');
    }
    v.string(r, 'passwordEnv', 'redis', { pattern: ENV_NAME, what: 'an environment variable name' });
    v.bool(r, 'tls', 'redis');
    v.string(r, 'prefix', 'redis');
  }
  if (top.server !== undefined) {
    const s = v.object(top.server, 'server', [
      'host',
      'port',
      'tokenEnv',
      'tokenFile',
      'clients',
      'sessionSecretEnv',
      'sessionSecretFile',
      'roots',
    ]);
    v.string(s, 'host', 'server');
    v.int(s, 'port', 'server', 0, 65535);
    v.secretRef(s, 'token', 'server');
    v.secretRef(s, 'sessionSecret', 'server');
    v.stringArray(s, 'roots', 'server');
  }
  if (top.audit !== undefined) {
    const a = v.object(top.audit, 'audit', ['log', 'rotateBytes', 'maxBacklog', 'drain']);
    v.string(a, 'log', 'audit');
    v.int(a, 'rotateBytes', 'audit', MIN_AUDIT_ROTATE_BYTES, Number.MAX_SAFE_INTEGER);
    v.int(a, 'maxBacklog', 'audit', 1, 100_000_000);
    v.bool(a, 'drain', 'audit');
  }
  if (top.limits !== undefined) {
    const l = v.object(top.limits, 'limits', ['maxEntrySize', 'maxCompressionRatio', 'memoryBudget']);
    v.int(l, 'maxEntrySize', 'limits', MIN_ENTRY_SIZE_LIMIT, MAX_ENTRY_SIZE_LIMIT);
    v.int(l, 'maxCompressionRatio', 'limits', ...RATIO_LIMIT_RANGE);
    v.int(l, 'memoryBudget', 'limits', MIN_MEMORY_BUDGET, MAX_MEMORY_BUDGET);
  }
  if (top.profiles === undefined) v.fail('profiles', 'is required (an object of named signing profiles)');
  const profiles = v.object(
    top.profiles,
    'profiles',
    typeof top.profiles === 'object' && top.profiles !== null ? Object.keys(top.profiles) : [],
  );
  for (const [name, p] of Object.entries(profiles)) {
    if (!PROFILE_NAME.test(name))
      v.fail(`profiles.${name}`, 'must be named with letters, digits, ".", "_" or "-" (at most 64)');
    validateProfile(v, p, `profiles.${name}`);
  }
  const server = top.server as Obj | undefined;
  if (server?.clients !== undefined) validateClients(v, server, Object.keys(profiles));
  return raw as ConfigFile;
}

/**
 * `server.clients`: names, one token source each, known scopes, profiles that exist. Two clients with
 * the same env var or hash are refused here; equal tokens from different sources at load time
 * (src/service/auth.ts).
 */
function validateClients(v: Validator, server: Obj, profileNames: string[]): void {
  if (server.tokenEnv !== undefined || server.tokenFile !== undefined)
    v.fail('server.clients', 'and server.tokenEnv/tokenFile are exclusive: give the token to a client');
  const raw = server.clients;
  const clients = v.object(
    raw,
    'server.clients',
    typeof raw === 'object' && raw !== null ? Object.keys(raw) : [],
  );
  const names = Object.keys(clients).filter((k) => !k.startsWith('$') && !k.startsWith('//'));
  if (names.length === 0) v.fail('server.clients', 'must name at least one client');
  if (names.length > MAX_CLIENTS) v.fail('server.clients', `must name at most ${MAX_CLIENTS} clients`);
  const sources = new Map<string, string>();
  for (const name of names) {
    const path = `server.clients.${name}`;
    if (!CLIENT_NAME.test(name)) v.fail(path, 'must be named with letters, digits, "_" or "-" (at most 64)');
    const c = v.object(clients[name], path, ['tokenEnv', 'tokenFile', 'tokenSha256', 'profiles', 'scopes']);
    v.string(c, 'tokenEnv', path, { pattern: ENV_NAME, what: 'an environment variable name' });
    v.string(c, 'tokenFile', path);
    v.string(c, 'tokenSha256', path, { pattern: SHA256_HEX, what: "the token's sha256 as 64 hex digits" });
    const given = (['tokenEnv', 'tokenFile', 'tokenSha256'] as const).filter((k) => c[k] !== undefined);
    if (given.length === 0) v.fail(path, 'needs its token: give one of tokenEnv, tokenFile or tokenSha256');
    if (given.length > 1) v.fail(`${path}.${given[0]!}`, `and ${path}.${given[1]!} are exclusive: give one`);
    const source = `${given[0]!}=${String(c[given[0]!]).toLowerCase()}`;
    const twin = sources.get(source);
    if (twin !== undefined)
      v.fail(
        `${path}.${given[0]!}`,
        `is the same as server.clients.${twin}.${given[0]!}: every client needs its own token`,
      );
    sources.set(source, name);
    const scopes = v.stringArray(c, 'scopes', path, { required: true, min: 1 }) ?? [];
    scopes.forEach((x, i) => {
      if (!(CLIENT_SCOPES as readonly string[]).includes(x))
        v.fail(
          `${path}.scopes[${i}]`,
          `must be one of ${CLIENT_SCOPES.map((s) => `"${s}"`).join(', ')}, got ${JSON.stringify(x.slice(0, 32))}`,
        );
    });
    const profiles = v.stringArray(c, 'profiles', path, { min: 1 });
    profiles?.forEach((p, i) => {
      if (!profileNames.includes(p))
        v.fail(`${path}.profiles[${i}]`, `names no profile (profiles: ${profileNames.join(', ')})`);
    });
    if (scopes.includes('admin')) {
      if (profiles !== undefined)
        v.fail(`${path}.profiles`, 'is not allowed with "admin" (admin may use every profile)');
    } else if (scopes.includes('submit')) {
      if (profiles === undefined)
        v.fail(`${path}.profiles`, 'is required with "submit": list the profiles it may use');
    } else if (profiles !== undefined) {
      v.fail(`${path}.profiles`, 'is only meaningful with "submit"');
    }
  }
}

function validateProfile(v: Validator, raw: unknown, path: string): ProfileFile {
  const p = v.object(raw, path, ['authenticode', 'mar', 'policy']);
  if (p.authenticode === undefined && p.mar === undefined)
    v.fail(path, 'must configure "authenticode", "mar" or both');
  if (p.authenticode !== undefined) {
    const ap = `${path}.authenticode`;
    const a = v.object(p.authenticode, ap, [
      'certChain',
      'key',
      'pkcs12',
      ...backendSectionFields(),
      'digest',
      'programName',
      'programUrl',
      'signingTime',
      'timestamp',
    ]);
    v.string(a, 'certChain', ap);
    v.string(a, 'key', ap);
    v.string(a, 'pkcs12', ap);
    if (a.pkcs12 !== undefined && a.key !== undefined)
      v.fail(`${ap}.pkcs12`, 'excludes certChain and key: give either pkcs12 or certChain + key');
    if (a.pkcs12 === undefined && a.key === undefined) {
      if (a.certChain === undefined) v.fail(`${ap}.certChain`, 'is required (or give pkcs12)');
      v.fail(`${ap}.key`, 'is required (or give pkcs12)');
    }
    // The key's backend (src/keys/registry.ts): its own rules, its secrets, whether it needs certChain.
    validateKeySection(v, 'authenticode', a, ap);
    v.enumOf(a, 'digest', ap, ['sha256', 'sha1'] as const);
    v.string(a, 'programName', ap);
    const url = v.string(a, 'programUrl', ap);
    if (url !== undefined && !/^https?:\/\/\S+$/.test(url))
      v.fail(`${ap}.programUrl`, 'must be an http(s) URL');
    v.bool(a, 'signingTime', ap);
    if (a.timestamp !== undefined) {
      const tp = `${ap}.timestamp`;
      const t = v.object(a.timestamp, tp, ['urls', 'retries', 'backoffMs', 'timeoutMs', 'digest']);
      const urls = v.stringArray(t, 'urls', tp, { required: true, min: 1, max: MAX_TIMESTAMP_URLS }) ?? [];
      urls.forEach((u, i) => {
        if (!/^https?:\/\/\S+$/.test(u)) v.fail(`${tp}.urls[${i}]`, 'must be an http(s) URL');
      });
      v.int(t, 'retries', tp, 1, 10);
      v.int(t, 'backoffMs', tp, 0, 60_000);
      v.int(t, 'timeoutMs', tp, 1, 300_000);
      v.enumOf(t, 'digest', tp, ['sha1', 'sha256', 'sha384', 'sha512'] as const);
    }
  }
  if (p.mar !== undefined) {
    const mp = `${path}.mar`;
    const m = v.object(p.mar, mp, ['keys', ...backendSectionFields(), 'algorithm']);
    v.stringArray(m, 'keys', mp, { required: true, min: 1, max: MAX_MAR_KEYS });
    validateKeySection(v, 'mar', m, mp);
    v.enumOf(m, 'algorithm', mp, ['sha384', 'sha1'] as const);
  }
  if (p.policy !== undefined) validatePolicy(v, p.policy, `${path}.policy`);
  return raw as ProfileFile;
}

function validatePolicy(v: Validator, raw: unknown, path: string): PolicyFile {
  const p = v.object(raw, path, ['include', 'exclude', 'onInvalid', 'verifyPassthrough']);
  v.stringArray(p, 'include', path);
  v.stringArray(p, 'exclude', path);
  v.enumOf(p, 'onInvalid', path, ['error', 'skip'] as const);
  v.bool(p, 'verifyPassthrough', path);
  return raw as PolicyFile;
}
