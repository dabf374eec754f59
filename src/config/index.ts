import { X509Certificate, createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { defaultCacheDir, loadOrCreateSecret, readSecretFile } from '../../cache/defaults.js';
import { MIN_SECRET_BYTES } from '../../cache/fs-store.js';
import { CodedError, ConfigError } from '../errors.js';
import { configError } from './errors.js';
// pem.js and registry.js directly, not the keys/ barrel: the barrel pulls in node-forge (PKCS#12, dev
// keys), which only a pkcs12 profile needs; backends load their heavy parts on use.
import { certificateSpki, pemCertificates } from '../keys/pem.js';
import {
  keyFiles,
  keyRefs,
  loadKeyRef,
  probeKeySection,
  type KeyLoadContext,
  type KeyProbeResult,
} from '../keys/registry.js';
import type { SigningKey } from '../keys/types.js';
import type { AuthenticodeOptions } from '../signing/types.js';
import {
  DEFAULT_LIMITS,
  DEFAULT_POLICY,
  type ConfigFile,
  type LoadedConfig,
  type PolicyFile,
  type SigningProfile,
} from './types.js';
import { validateConfig } from './validate.js';

export type { ConfigFile, LoadedConfig, ProfileFile, SigningProfile, PolicyFile } from './types.js';
export { DEFAULT_LIMITS, DEFAULT_POLICY } from './types.js';
export { validateConfig, MAX_MAR_KEYS } from './validate.js';

/** A config file bigger than this is not a marsign config. */
export const MAX_CONFIG_BYTES = 1 << 20;
/** Key, certificate and secret files bigger than this are refused before reading. */
export const MAX_KEY_FILE_BYTES = 1 << 20;
/** libmar MAX_SIGNATURE_LENGTH (mar-format.md §3): RSA keys above 16384 bits cannot sign a MAR. */
export const MAX_MAR_SIGNATURE_BYTES = 2048;
export const CONFIG_FILENAME = 'marsign.config.json';
/** EKU id-kp-codeSigning (RFC 5280 §4.2.1.12). */
const EKU_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';

/**
 * Where the config comes from: `path` (--config), else $MARSIGN_CONFIG, else ./marsign.config.json.
 * The file is read once, validated whole, and only its sha256 is meant for logs.
 */
export async function loadConfig(path?: string): Promise<LoadedConfig> {
  const [chosen, how] =
    path !== undefined && path !== ''
      ? [path, '--config']
      : process.env.MARSIGN_CONFIG
        ? [process.env.MARSIGN_CONFIG, '$MARSIGN_CONFIG']
        : [CONFIG_FILENAME, 'the default (./marsign.config.json)'];
  const abs = resolve(chosen);
  let bytes: Buffer;
  try {
    const st = await stat(abs);
    if (!st.isFile())
      throw configError('CONFIG_NOT_FOUND', `config ${abs} (from ${how}) is not a regular file`);
    if (st.size > MAX_CONFIG_BYTES) {
      throw configError('CONFIG_INVALID', `config ${abs} is ${st.size} bytes (limit ${MAX_CONFIG_BYTES})`);
    }
    bytes = await readFile(abs);
  } catch (e) {
    if (e instanceof CodedError) throw e;
    throw configError(
      'CONFIG_NOT_FOUND',
      `config ${abs} (from ${how}) cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`,
      { cause: e },
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    // V8's message quotes the surrounding text, which could hold a misplaced secret: give a position only.
    const m = /position (\d+)/.exec(String((e as Error).message));
    const where = m ? ` at ${lineCol(bytes, Number(m[1]))}` : '';
    throw configError('CONFIG_INVALID', `${abs}: not valid JSON${where}`);
  }
  const file = validateConfig(raw, abs);
  const dir = dirname(abs);
  checkReferencedFiles(file, dir, abs);
  return { path: abs, sha256: createHash('sha256').update(bytes).digest('hex'), dir, file };
}

/**
 * The config when one is named (`path`, $MARSIGN_CONFIG) or ./marsign.config.json exists, else
 * undefined: for commands that work without one (status, cache) on the environment's defaults.
 */
export async function loadConfigIfPresent(path?: string): Promise<LoadedConfig | undefined> {
  if ((path !== undefined && path !== '') || process.env.MARSIGN_CONFIG || existsSync(CONFIG_FILENAME))
    return loadConfig(path);
  return undefined;
}

function lineCol(bytes: Buffer, pos: number): string {
  const before = bytes.subarray(0, pos).toString('utf8').split('\n');
  return `line ${before.length} column ${(before[before.length - 1] ?? '').length + 1}`;
}

/** Fail fast: every file a profile names must exist when the config loads, not when a job runs. */
function checkReferencedFiles(file: ConfigFile, dir: string, cfgPath: string): void {
  const need = (field: string, p: string | undefined): void => {
    if (p === undefined) return;
    const abs = resolvePath(dir, p);
    if (!existsSync(abs))
      throw configError('CONFIG_FILE_MISSING', `${cfgPath}: ${field}: ${abs} does not exist`, {
        details: { field },
      });
  };
  for (const [name, p] of Object.entries(file.profiles)) {
    const base = `profiles.${name}`;
    if (p.authenticode) need(`${base}.authenticode.certChain`, p.authenticode.certChain);
    // Key files (PEM, PKCS#12, a PKCS#11 module and pin-source): the registry says which.
    for (const section of ['authenticode', 'mar'] as const) {
      const raw = p[section] as Record<string, unknown> | undefined;
      if (!raw) continue;
      let files;
      try {
        files = keyFiles(section, raw, base, { config: file, configDir: dir });
      } catch (e) {
        if (e instanceof ConfigError)
          throw new ConfigError(e.code, `${cfgPath}: ${e.message}`, { details: e.details });
        throw e;
      }
      for (const f of files) need(f.field, f.path);
    }
  }
}

export function resolvePath(dir: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dir, p);
}

/** Where a secret comes from; at most one of the two. */
export interface SecretRef {
  env?: string | undefined;
  file?: string | undefined;
}

/**
 * Read a secret from an environment variable or a file (relative to `baseDir`); undefined when
 * neither is configured. Errors name the variable or file and `where` (the field), never the value.
 * One trailing newline of a file is dropped.
 */
export async function resolveSecret(
  ref: SecretRef,
  where: string,
  baseDir: string = process.cwd(),
): Promise<string | undefined> {
  return resolveSecretSync(ref, where, baseDir);
}

export function resolveSecretSync(
  ref: SecretRef,
  where: string,
  baseDir: string = process.cwd(),
): string | undefined {
  if (ref.env !== undefined) {
    const v = process.env[ref.env];
    if (v === undefined)
      throw configError('SECRET_MISSING', `${where}: environment variable ${ref.env} is not set`, {
        details: { variable: ref.env },
      });
    if (v === '')
      throw configError('SECRET_MISSING', `${where}: environment variable ${ref.env} is empty`, {
        details: { variable: ref.env },
      });
    return v;
  }
  if (ref.file !== undefined) {
    const abs = resolvePath(baseDir, ref.file);
    let text: string;
    try {
      if (statSync(abs).size > MAX_KEY_FILE_BYTES)
        throw configError('SECRET_INVALID', `${where}: ${abs} is larger than ${MAX_KEY_FILE_BYTES} bytes`);
      text = readFileSync(abs, 'utf8');
    } catch (e) {
      if (e instanceof CodedError) throw e;
      throw configError(
        'SECRET_MISSING',
        `${where}: secret file ${abs} cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`,
        { details: { file: abs } },
      );
    }
    const v = text.replace(/\r?\n$/, '');
    if (v === '')
      throw configError('SECRET_MISSING', `${where}: secret file ${abs} is empty`, {
        details: { file: abs },
      });
    return v;
  }
  return undefined;
}

async function readLimited(path: string, where: string): Promise<Buffer> {
  try {
    const st = await stat(path);
    if (st.size > MAX_KEY_FILE_BYTES)
      throw configError('KEY_INVALID', `${where}: ${path} is ${st.size} bytes (limit ${MAX_KEY_FILE_BYTES})`);
    return await readFile(path);
  } catch (e) {
    if (e instanceof CodedError) throw e;
    throw configError(
      'CONFIG_FILE_MISSING',
      `${where}: ${path} cannot be read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
}

/** Run `fn`, re-raising a ConfigError with the profile and field in front (same code). */
async function inField<T>(where: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    // Already prefixed by a nested `at(...)` (a backend's secret): keep that, more precise, field.
    if (e instanceof ConfigError && !e.message.startsWith(where) && !e.message.startsWith('profile "')) {
      throw new ConfigError(e.code, `${where}: ${e.message}`, { details: { ...e.details, field: where } });
    }
    throw e;
  }
}

/**
 * Load one profile: keys into memory (node:crypto), chain parsed, key/certificate pairing and
 * code-signing EKU checked, fingerprint computed. Errors name the profile and field.
 */
export async function loadProfile(config: LoadedConfig, name: string): Promise<SigningProfile> {
  const pf = Object.hasOwn(config.file.profiles, name) ? config.file.profiles[name] : undefined;
  if (!pf) {
    const known = Object.keys(config.file.profiles);
    throw configError(
      'PROFILE_NOT_FOUND',
      `profile "${name}" is not in ${config.path} (profiles: ${known.length ? known.join(', ') : 'none'})`,
    );
  }
  const dir = config.dir;
  const at = (field: string): string => `profile "${name}": ${field}`;
  const profile: SigningProfile = {
    name,
    policy: { ...DEFAULT_POLICY, ...definedOnly(pf.policy) },
    limits: {
      maxEntrySize: config.file.limits?.maxEntrySize ?? DEFAULT_LIMITS.maxEntrySize,
      maxCompressionRatio: config.file.limits?.maxCompressionRatio ?? DEFAULT_LIMITS.maxCompressionRatio,
    },
    fingerprint: '',
  };

  if (pf.authenticode) {
    const a = pf.authenticode;
    const ref = keyRefs('authenticode', a as Record<string, unknown>)[0];
    if (!ref) throw configError('CONFIG_INVALID', `${at('authenticode')}: no key or pkcs12`);
    const loaded = await inField(at(ref.field), () =>
      loadKeyRef(ref, keyContext(config, a as Record<string, unknown>, at, a.certChain === undefined)),
    );
    const key = loaded.key;
    let chainDer: Uint8Array[];
    let chainFrom = 'authenticode.certChain';
    if (a.certChain !== undefined) {
      const cp = resolvePath(dir, a.certChain);
      const chainPem = await readLimited(cp, at('authenticode.certChain'));
      chainDer = await inField(at('authenticode.certChain'), () => pemCertificates(chainPem));
    } else {
      chainDer = loaded.chainDer ?? [];
      chainFrom = loaded.chainFrom ?? ref.field;
    }
    const leaf = chainDer[0];
    if (!leaf) throw configError('CERT_INVALID', `${at('authenticode.certChain')}: no certificate`);
    if (!Buffer.from(certificateSpki(leaf)).equals(Buffer.from(key.publicKeyDer))) {
      throw configError(
        'KEY_CERT_MISMATCH',
        `${at(ref.field)}: the private key does not match the first certificate of ${chainFrom} (${new X509Certificate(leaf).subject.replace(/\n/g, ', ')})`,
        { details: { field: ref.field } },
      );
    }
    const eku = new X509Certificate(leaf).keyUsage;
    if (eku !== undefined && !eku.includes(EKU_CODE_SIGNING)) {
      throw configError(
        'CERT_NOT_CODE_SIGNING',
        `${at('authenticode.certChain')}: the signer certificate's extended key usage (${eku.join(', ')}) lacks codeSigning ${EKU_CODE_SIGNING}`,
      );
    }
    const opts: AuthenticodeOptions = { key, certChainDer: chainDer, digest: a.digest ?? 'sha256' };
    if (a.programName !== undefined) opts.programName = a.programName;
    if (a.programUrl !== undefined) opts.programUrl = a.programUrl;
    if (a.signingTime !== undefined) opts.signingTime = a.signingTime;
    if (a.timestamp !== undefined) opts.timestamp = { ...a.timestamp, urls: [...a.timestamp.urls] };
    profile.authenticode = opts;
  }

  if (pf.mar) {
    const m = pf.mar;
    const keys: SigningKey[] = [];
    const ctx = keyContext(config, m as unknown as Record<string, unknown>, at, false);
    for (const ref of keyRefs('mar', m as unknown as Record<string, unknown>)) {
      const field = ref.field;
      const { key } = await inField(at(field), () => loadKeyRef(ref, ctx));
      if (key.bits / 8 > MAX_MAR_SIGNATURE_BYTES) {
        throw configError(
          'KEY_UNSUPPORTED',
          `${at(field)}: a ${key.bits}-bit key makes ${key.bits / 8}-byte signatures; MAR allows ${MAX_MAR_SIGNATURE_BYTES}`,
        );
      }
      keys.push(key);
    }
    profile.mar = { keys, algorithm: m.algorithm ?? 'sha384' };
  }
  profile.fingerprint = profileFingerprint(profile);
  return profile;
}

/** What a key backend needs from the config: secrets and files resolved against the config's directory. */
function keyContext(
  config: LoadedConfig,
  section: Record<string, unknown>,
  at: (field: string) => string,
  wantChain: boolean,
): KeyLoadContext {
  return {
    config: config.file,
    configDir: config.dir,
    section,
    wantChain,
    secret: (ref, field) => resolveSecretSync(ref, at(field), config.dir),
    readFile: (path, field) => readLimited(path, at(field)),
  };
}

/**
 * Health of a profile's keys held in devices (PKCS#11 tokens): reachable, logged in, key present.
 * File keys are not listed. Signs nothing; never throws (errors are in the results).
 */
export async function probeProfileKeys(config: LoadedConfig, name: string): Promise<KeyProbeResult[]> {
  const pf = Object.hasOwn(config.file.profiles, name) ? config.file.profiles[name] : undefined;
  if (!pf) return [];
  const at = (field: string): string => `profile "${name}": ${field}`;
  const out: KeyProbeResult[] = [];
  for (const section of ['authenticode', 'mar'] as const) {
    const raw = pf[section] as Record<string, unknown> | undefined;
    if (raw) out.push(...(await probeKeySection(section, keyContext(config, raw, at, false))));
  }
  return out;
}

function definedOnly(p: PolicyFile | undefined): PolicyFile {
  const out: PolicyFile = {};
  if (p?.include !== undefined) out.include = [...p.include];
  if (p?.exclude !== undefined) out.exclude = [...p.exclude];
  if (p?.onInvalid !== undefined) out.onInvalid = p.onInvalid;
  return out;
}

/**
 * sha256 over a canonical JSON of everything that changes signed bytes: chain certificate hashes,
 * key ids, digest, program name/URL, signingTime, timestamp settings, MAR key ids and algorithm.
 * The policy is not included: it decides which entries are signed, not how (the pipeline keys
 * per-entry cache records by content and this fingerprint).
 */
export function profileFingerprint(p: Pick<SigningProfile, 'authenticode' | 'mar'>): string {
  const a = p.authenticode;
  const doc = {
    v: 1,
    authenticode: a
      ? {
          chain: a.certChainDer.map((d) => createHash('sha256').update(d).digest('hex')),
          key: a.key.id,
          digest: a.digest,
          programName: a.programName ?? null,
          programUrl: a.programUrl ?? null,
          signingTime: a.signingTime ?? false,
          timestamp: a.timestamp ? { urls: a.timestamp.urls, digest: a.timestamp.digest ?? null } : null,
        }
      : null,
    mar: p.mar ? { keys: p.mar.keys.map((k) => k.id), algorithm: p.mar.algorithm } : null,
  };
  return createHash('sha256').update(JSON.stringify(doc)).digest('hex');
}

/** The cache root a config names (or `dirOverride`, e.g. `--cache-dir`), without touching it. */
export function cacheDirOf(config?: LoadedConfig, dirOverride?: string): string {
  if (dirOverride) return resolve(dirOverride);
  const c = config?.file.cache;
  return c?.dir ? resolvePath(config!.dir, c.dir) : defaultCacheDir();
}

/** The cache root and the HMAC secret that authenticates cache entries. */
export interface CacheSettings {
  dir: string;
  hmacSecret: Uint8Array;
}

/**
 * Cache dir: config `cache.dir` (relative to the config file), else $MARSIGN_CACHE_DIR, else
 * $XDG_CACHE_HOME/marsign, else ~/.cache/marsign (cache/defaults.ts). HMAC secret, as hex: from
 * `cache.hmacSecretEnv`, or `cache.hmacSecretFile` (a private, mode 0600, hex line); when none is
 * configured, 32 random bytes generated once and kept 0600 in `<dir>/.hmac-secret`, shared with
 * `marsign cache verify`.
 */
export async function cacheSettings(config?: LoadedConfig, dirOverride?: string): Promise<CacheSettings> {
  const c = config?.file.cache;
  const base = config?.dir ?? process.cwd();
  const dir = cacheDirOf(config, dirOverride);
  if (c?.hmacSecretFile !== undefined) {
    return { dir, hmacSecret: await readSecretFile(resolvePath(base, c.hmacSecretFile)) };
  }
  if (c?.hmacSecretEnv !== undefined) {
    const hex = resolveSecretSync({ env: c.hmacSecretEnv }, 'cache.hmacSecretEnv', base) as string;
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex.trim())) {
      throw configError(
        'CACHE_SECRET_INVALID',
        `cache.hmacSecretEnv: environment variable ${c.hmacSecretEnv} does not hold a hex secret`,
      );
    }
    const bytes = new Uint8Array(Buffer.from(hex.trim(), 'hex'));
    if (bytes.length < MIN_SECRET_BYTES) {
      throw configError(
        'CACHE_SECRET_TOO_SHORT',
        `cache.hmacSecretEnv: ${c.hmacSecretEnv} holds ${bytes.length} bytes, at least ${MIN_SECRET_BYTES} are needed`,
      );
    }
    return { dir, hmacSecret: bytes };
  }
  return { dir, hmacSecret: await loadOrCreateSecret(dir) };
}
