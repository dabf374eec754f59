import { isAbsolute, resolve } from 'node:path';
import type { ConfigFile } from '../config/types.js';
import type { Validator } from '../config/validator.js';
import { ConfigError, type CodedErrorOptions } from '../errors.js';
import { PKCS11_MODULE_ENV, isPkcs11Uri, parsePkcs11Uri } from './pkcs11-uri.js';
import type { Pkcs11ErrorCode, TokenProbe } from './pkcs11.js';
import type { SigningKey } from './types.js';

function registryError(
  code: KeyRegistryErrorCode | Pkcs11ErrorCode,
  message: string,
  options?: CodedErrorOptions,
): ConfigError {
  return new ConfigError(code, message, options);
}

/**
 * Key backends, looked up in one registry that drives config validation, the files-must-exist check
 * and loading (docs/ARCHITECTURE.md "Keys"). A backend is one object: which references it owns (a PEM
 * path, a PKCS#12 file, a `pkcs11:` URI), which config fields it reads, which files must exist, and how
 * it loads a SigningKey (+ the certificate chain when it holds one). Heavy code (node-forge, the PKCS#11
 * binding) is imported by `load`, never here: the config validator imports this module.
 */

export type KeyRegistryErrorCode = 'KEY_BACKEND_UNKNOWN';

/** Profile sections that hold keys. */
export type KeySection = 'authenticode' | 'mar';
/** Which config field a reference sits in: `authenticode.key` / `mar.keys[i]` ("key") or `authenticode.pkcs12`. */
export type RefSlot = 'key' | 'pkcs12';
export type BackendName = 'pem' | 'pkcs12' | 'pkcs11';

export interface KeyRef {
  section: KeySection;
  slot: RefSlot;
  /** Field path inside the profile: `authenticode.key`, `authenticode.pkcs12`, `mar.keys[1]`. */
  field: string;
  value: string;
}

type Obj = Record<string, unknown>;

export interface KeyFileContext {
  config: ConfigFile;
  configDir: string;
  /** The raw profile section (authenticode or mar). */
  section: Obj;
}

export interface KeyLoadContext extends KeyFileContext {
  /** A secret from `{ env }` or `{ file }` (relative to the config); errors name `field`, never the value. */
  secret(ref: { env?: string | undefined; file?: string | undefined }, field: string): string | undefined;
  /** A key file's bytes, size-limited; errors name the field. */
  readFile(path: string, field: string): Promise<Buffer>;
  /** Whether the caller wants the backend's certificate chain (Authenticode without certChain). */
  wantChain: boolean;
}

export interface LoadedKey {
  key: SigningKey;
  /** Signer first; only from backends that hold certificates (PKCS#12, a token). */
  chainDer?: Uint8Array[];
  /** Where the chain came from, for messages ("the PKCS#12 file", "the token"). */
  chainFrom?: string;
}

export interface KeyBackend {
  readonly name: BackendName;
  /** Whether this backend owns the reference. */
  recognises(ref: Pick<KeyRef, 'slot' | 'value'>): boolean;
  /** Secret pairs (`<name>Env` / `<name>File`) it reads from its profile section. */
  readonly secrets: readonly string[];
  /** Top-level config fields it owns (validated by validateTop). */
  readonly topFields: readonly string[];
  /** Whether Authenticode needs `certChain` beside this key. */
  readonly chain: 'required' | 'optional' | 'forbidden';
  validateTop?(v: Validator, top: Obj): void;
  /** Backend-specific checks of a reference; `path` is the config path (`profiles.p.authenticode.key`). */
  validateRef?(v: Validator, ref: KeyRef, path: string, section: Obj): void;
  /** Files that must exist when the config loads, each with the config path that names it. */
  files(ref: KeyRef, path: string, ctx: KeyFileContext): { field: string; path: string }[];
  load(ref: KeyRef, ctx: KeyLoadContext): Promise<LoadedKey>;
  /** Health of the key's device, without signing (backends with a device only). */
  probe?(ref: KeyRef, ctx: KeyLoadContext): Promise<TokenProbe>;
}

function resolveIn(dir: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dir, p);
}

/** `<name>Env` / `<name>File` of the reference's section; errors name e.g. `mar.passphraseFile`. */
function sectionSecret(ref: KeyRef, ctx: KeyLoadContext, name: string): string | undefined {
  const env = ctx.section[`${name}Env`] as string | undefined;
  const file = ctx.section[`${name}File`] as string | undefined;
  return ctx.secret({ env, file }, `${ref.section}.${name}${env !== undefined ? 'Env' : 'File'}`);
}

const pem: KeyBackend = {
  name: 'pem',
  recognises: (r) => r.slot === 'key' && !isPkcs11Uri(r.value),
  secrets: ['passphrase'],
  topFields: [],
  chain: 'required',
  files: (ref, path, ctx) => [{ field: path, path: resolveIn(ctx.configDir, ref.value) }],
  async load(ref, ctx) {
    const { loadPemKey } = await import('./pem.js');
    const passphrase = sectionSecret(ref, ctx, 'passphrase');
    const bytes = await ctx.readFile(resolveIn(ctx.configDir, ref.value), ref.field);
    return { key: loadPemKey(bytes, passphrase) };
  },
};

const pkcs12: KeyBackend = {
  name: 'pkcs12',
  recognises: (r) => r.slot === 'pkcs12',
  secrets: ['passphrase'],
  topFields: [],
  chain: 'forbidden',
  files: (ref, path, ctx) => [{ field: path, path: resolveIn(ctx.configDir, ref.value) }],
  async load(ref, ctx) {
    const passphrase = sectionSecret(ref, ctx, 'passphrase');
    const der = await ctx.readFile(resolveIn(ctx.configDir, ref.value), ref.field);
    // node-forge is only loaded for a PKCS#12 profile.
    const { loadPkcs12 } = await import('./pkcs12.js');
    const { key, chainDer } = loadPkcs12(der, passphrase ?? '');
    return { key, chainDer, chainFrom: 'the PKCS#12 file' };
  },
};

export { PKCS11_MODULE_ENV };

/** The Cryptoki library for a URI: its module-path, else $MARSIGN_PKCS11_MODULE, else config pkcs11.module. */
function pkcs11Module(value: string, ctx: KeyFileContext, field: string): string {
  const uri = parsePkcs11Uri(value);
  const env = process.env[PKCS11_MODULE_ENV];
  const p = uri.modulePath ?? (env ? env : undefined) ?? ctx.config.pkcs11?.module;
  if (p === undefined)
    throw registryError(
      'PKCS11_MODULE_MISSING',
      `${field}: ${uri.text} needs a PKCS#11 module: set "pkcs11": { "module": "/path/to/lib.so" } in the config or $${PKCS11_MODULE_ENV}`,
      { details: { field } },
    );
  return resolveIn(ctx.configDir, p);
}

function pinFor(ref: KeyRef, ctx: KeyLoadContext): string | undefined {
  const fromSection = sectionSecret(ref, ctx, 'pin');
  if (fromSection !== undefined) return fromSection;
  const uri = parsePkcs11Uri(ref.value);
  if (uri.pinSource !== undefined) return ctx.secret({ file: uri.pinSource }, `${ref.field} pin-source`);
  return undefined;
}

async function pkcs11Target(ref: KeyRef, ctx: KeyLoadContext) {
  const { keyUri } = await import('./pkcs11.js');
  return { module: pkcs11Module(ref.value, ctx, ref.field), uri: keyUri(ref.value), pin: pinFor(ref, ctx) };
}

const pkcs11: KeyBackend = {
  name: 'pkcs11',
  recognises: (r) => r.slot === 'key' && isPkcs11Uri(r.value),
  secrets: ['pin'],
  topFields: ['pkcs11'],
  chain: 'optional',
  validateTop(v, top) {
    if (top.pkcs11 === undefined) return;
    const o = v.object(top.pkcs11, 'pkcs11', ['module']);
    v.string(o, 'module', 'pkcs11');
  },
  validateRef(v, ref, path, section) {
    let uri;
    try {
      uri = parsePkcs11Uri(ref.value);
    } catch (e) {
      if (e instanceof ConfigError) v.failWith(e.code, path, e.message);
      throw e;
    }
    if (uri.moduleName !== undefined)
      v.failWith(
        'PKCS11_URI_INVALID',
        path,
        `${uri.text}: module-name is not supported; set pkcs11.module, $${PKCS11_MODULE_ENV} or module-path`,
      );
    if (uri.pinSource !== undefined && (section.pinEnv !== undefined || section.pinFile !== undefined))
      v.fail(path, `has a pin-source and the section has pinEnv/pinFile: give one`);
  },
  files(ref, path, ctx) {
    const out = [{ field: `${path} (PKCS#11 module)`, path: pkcs11Module(ref.value, ctx, path) }];
    const uri = parsePkcs11Uri(ref.value);
    if (uri.pinSource !== undefined)
      out.push({ field: `${path} pin-source`, path: resolveIn(ctx.configDir, uri.pinSource) });
    return out;
  },
  async load(ref, ctx) {
    const target = await pkcs11Target(ref, ctx);
    const { loadPkcs11Key, tokenChain } = await import('./pkcs11.js');
    const key = loadPkcs11Key(target);
    if (!ctx.wantChain) return { key };
    return { key, chainDer: tokenChain(target, key), chainFrom: 'the token' };
  },
  async probe(ref, ctx) {
    const target = await pkcs11Target(ref, ctx);
    const { probeToken } = await import('./pkcs11.js');
    return probeToken(target);
  },
};

/** Every backend, in lookup order. */
export const KEY_BACKENDS: readonly KeyBackend[] = [pkcs11, pkcs12, pem];

export function backendFor(ref: Pick<KeyRef, 'slot' | 'value'>): KeyBackend {
  const b = KEY_BACKENDS.find((x) => x.recognises(ref));
  if (!b)
    throw registryError('KEY_BACKEND_UNKNOWN', `no key backend takes a ${ref.slot} reference like this one`);
  return b;
}

/** The key references of a profile section, in order (mar: one per signature). */
export function keyRefs(section: KeySection, raw: Obj): KeyRef[] {
  if (section === 'authenticode') {
    const out: KeyRef[] = [];
    if (typeof raw.key === 'string')
      out.push({ section, slot: 'key', field: 'authenticode.key', value: raw.key });
    if (typeof raw.pkcs12 === 'string')
      out.push({ section, slot: 'pkcs12', field: 'authenticode.pkcs12', value: raw.pkcs12 });
    return out;
  }
  const keys = Array.isArray(raw.keys) ? raw.keys : [];
  return keys.map((value, i) => ({ section, slot: 'key', field: `mar.keys[${i}]`, value: String(value) }));
}

/** Section fields the backends read (`passphraseEnv`, `pinFile`, ...). */
export function backendSectionFields(): string[] {
  return [...new Set(KEY_BACKENDS.flatMap((b) => b.secrets.flatMap((s) => [`${s}Env`, `${s}File`])))];
}

export function backendTopFields(): string[] {
  return [...new Set(KEY_BACKENDS.flatMap((b) => b.topFields))];
}

/**
 * Validate the key references of a section: each backend's own rules, the secret pairs (exclusive, and
 * only where some key of the section reads them), and the chain rule for Authenticode.
 */
export function validateKeySection(v: Validator, section: KeySection, raw: Obj, path: string): void {
  const refs = keyRefs(section, raw);
  const used = new Set<string>();
  for (const ref of refs) {
    const b = backendFor(ref);
    const p = `${path}.${ref.field.slice(section.length + 1)}`;
    b.validateRef?.(v, ref, p, raw);
    for (const s of b.secrets) used.add(s);
  }
  for (const b of KEY_BACKENDS) {
    for (const s of b.secrets) {
      v.secretRef(raw, s, path);
      const given =
        raw[`${s}Env`] !== undefined ? `${s}Env` : raw[`${s}File`] !== undefined ? `${s}File` : '';
      if (given && !used.has(s)) {
        const owners = KEY_BACKENDS.filter((x) => x.secrets.includes(s)).map((x) => x.name);
        v.fail(`${path}.${given}`, `is only read by ${owners.join('/')} keys, and this section has none`);
      }
    }
  }
  if (section === 'authenticode') {
    const ref = refs[0];
    if (!ref) return;
    const b = backendFor(ref);
    if (b.chain === 'required' && raw.certChain === undefined)
      v.fail(`${path}.certChain`, 'is required (or give pkcs12)');
    if (b.chain === 'forbidden' && raw.certChain !== undefined)
      v.fail(
        `${path}.${ref.field.slice(section.length + 1)}`,
        'excludes certChain and key: give either pkcs12 or certChain + key',
      );
  }
}

export function validateKeyTop(v: Validator, top: Obj): void {
  for (const b of KEY_BACKENDS) b.validateTop?.(v, top);
}

/** The files a section's keys need, with the config path of each. */
export function keyFiles(
  section: KeySection,
  raw: Obj,
  profilePath: string,
  ctx: Omit<KeyFileContext, 'section'>,
): { field: string; path: string }[] {
  return keyRefs(section, raw).flatMap((ref) =>
    backendFor(ref).files(ref, `${profilePath}.${ref.field}`, { ...ctx, section: raw }),
  );
}

/** Load one referenced key through its backend. */
export function loadKeyRef(ref: KeyRef, ctx: KeyLoadContext): Promise<LoadedKey> {
  return backendFor(ref).load(ref, ctx);
}

export interface KeyProbeResult extends TokenProbe {
  /** The profile field (`authenticode.key`, `mar.keys[0]`). */
  field: string;
}

/** Probe every key of a section whose backend has a device (PKCS#11); file keys are skipped. */
export async function probeKeySection(
  section: KeySection,
  ctx: Omit<KeyLoadContext, 'wantChain'>,
): Promise<KeyProbeResult[]> {
  const out: KeyProbeResult[] = [];
  for (const ref of keyRefs(section, ctx.section)) {
    const b = backendFor(ref);
    if (!b.probe) continue;
    try {
      out.push({
        field: ref.field,
        ...(await b.probe(ref, { ...ctx, wantChain: false })),
      });
    } catch (e) {
      const err = e as { code?: string; message?: string };
      out.push({
        field: ref.field,
        uri: parsePkcs11Uri(ref.value).text,
        reachable: false,
        loggedIn: false,
        keyPresent: false,
        error: { code: err.code ?? 'INTERNAL', message: String(err.message ?? e) },
      });
    }
  }
  return out;
}
