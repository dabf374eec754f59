import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { createRequire } from 'node:module';
import { isMainThread, threadId } from 'node:worker_threads';
import { CodedError, ConfigError, TransientError } from '../errors.js';
import { digestInfo } from './node-rsa.js';
import { MAX_CHAIN_CERTS, orderChain } from './pem.js';
import { PKCS11_MODULE_ENV, parsePkcs11Uri, type Pkcs11Uri, type Pkcs11UriErrorCode } from './pkcs11-uri.js';
import type { HashName, SigningKey } from './types.js';

/**
 * PKCS#11 key backend (docs/ARCHITECTURE.md "Keys"): the private key stays in the token, every
 * signature is one C_Sign with CKM_RSA_PKCS over the DigestInfo (RFC 8017 §9.2), which is byte for byte
 * what node:crypto makes from the same key in a file (PKCS#1 v1.5 is deterministic).
 *
 * Binding: pkcs11js (an optional dependency: it compiles a small N-API addon with node-gyp and ships no
 * prebuilt binary), loaded on first use. Its types are not imported so the project still builds where
 * the addon could not be compiled.
 *
 * Process model. Cryptoki state (C_Initialize, login) is per process; JS module state is per thread. Each
 * thread (the main thread and every piscina worker) dlopens the same library — one instance per process —
 * calls C_Initialize (CKR_CRYPTOKI_ALREADY_INITIALIZED is success) and opens its own session per token:
 * sessions must not be used by two threads at once (PKCS#11 2.40 §6.7.7). Login is per application and
 * token, so only the first C_Login of a process really logs in; later threads find their new session
 * already in a user state, or get CKR_USER_ALREADY_LOGGED_IN. C_Finalize and C_Logout are never called:
 * either would pull the token from under the other threads.
 */

export type Pkcs11ErrorCode =
  | 'PKCS11_BINDING_MISSING'
  | 'PKCS11_MODULE_MISSING'
  | 'PKCS11_MODULE_LOAD_FAILED'
  | 'PKCS11_TOKEN_NOT_FOUND'
  | 'PKCS11_TOKEN_AMBIGUOUS'
  | 'PKCS11_PIN_MISSING'
  | 'PKCS11_PIN_WRONG'
  | 'PKCS11_PIN_LOCKED'
  | 'PKCS11_KEY_NOT_FOUND'
  | 'PKCS11_KEY_AMBIGUOUS'
  | 'PKCS11_MECHANISM_UNSUPPORTED'
  | 'PKCS11_CERT_NOT_FOUND'
  | 'PKCS11_SESSION_LOST'
  | 'PKCS11_DEVICE_BUSY'
  | 'PKCS11_FAILED';

/** Codes a retry can fix (the queue backs off and tries again); the rest are configuration errors. */
const TRANSIENT: ReadonlySet<Pkcs11ErrorCode> = new Set(['PKCS11_SESSION_LOST', 'PKCS11_DEVICE_BUSY']);

function p11Error(
  code: Pkcs11ErrorCode,
  message: string,
  uri: string | undefined,
  cause?: unknown,
): CodedError {
  const opts = { details: uri ? { uri } : {}, ...(cause === undefined ? {} : { cause }) };
  return TRANSIENT.has(code) ? new TransientError(code, message, opts) : new ConfigError(code, message, opts);
}

/** A token or key this many objects deep is a misconfigured URI (we search, we do not enumerate). */
export const MAX_FIND_OBJECTS = 64;

// PKCS#11 2.40 constants (pkcs11t.h) used here; the binding's own copies are not typed.
const CKF_OS_LOCKING_OK = 0x2;
const CKF_SERIAL_SESSION = 0x4;
const CKU_USER = 1;
const CKO_CERTIFICATE = 1;
const CKO_PRIVATE_KEY = 3;
const CKA_CLASS = 0x0;
const CKA_LABEL = 0x3;
const CKA_VALUE = 0x11;
const CKA_KEY_TYPE = 0x100;
const CKA_ID = 0x102;
const CKA_SIGN = 0x108;
const CKA_MODULUS = 0x120;
const CKA_PUBLIC_EXPONENT = 0x122;
const CKA_ALLOWED_MECHANISMS = 0x40000600;
const CKK_RSA = 0x0;
const CKM_RSA_PKCS = 0x1;
const CKF_SIGN = 0x800;
const CKF_LOGIN_REQUIRED = 0x4;
const CKF_PROTECTED_AUTHENTICATION_PATH = 0x100;
const CKF_USER_PIN_FINAL_TRY = 0x20000;
const CKF_USER_PIN_LOCKED = 0x40000;
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;

const CKR = {
  HOST_MEMORY: 0x2,
  GENERAL_ERROR: 0x5,
  FUNCTION_FAILED: 0x6,
  DEVICE_ERROR: 0x30,
  DEVICE_MEMORY: 0x31,
  DEVICE_REMOVED: 0x32,
  FUNCTION_CANCELED: 0x50,
  KEY_HANDLE_INVALID: 0x60,
  KEY_TYPE_INCONSISTENT: 0x63,
  KEY_FUNCTION_NOT_PERMITTED: 0x68,
  MECHANISM_INVALID: 0x70,
  MECHANISM_PARAM_INVALID: 0x71,
  OBJECT_HANDLE_INVALID: 0x82,
  OPERATION_ACTIVE: 0x90,
  PIN_INCORRECT: 0xa0,
  PIN_INVALID: 0xa1,
  PIN_LEN_RANGE: 0xa2,
  PIN_EXPIRED: 0xa3,
  PIN_LOCKED: 0xa4,
  SESSION_CLOSED: 0xb0,
  SESSION_COUNT: 0xb1,
  SESSION_HANDLE_INVALID: 0xb3,
  TOKEN_NOT_PRESENT: 0xe0,
  TOKEN_NOT_RECOGNIZED: 0xe1,
  USER_ALREADY_LOGGED_IN: 0x100,
  USER_NOT_LOGGED_IN: 0x101,
  USER_PIN_NOT_INITIALIZED: 0x102,
  CRYPTOKI_NOT_INITIALIZED: 0x190,
  CRYPTOKI_ALREADY_INITIALIZED: 0x191,
} as const;

/** The session is gone (token removed, sessions closed, logged out): reopen, log in, find the key again. */
const SESSION_LOST = new Set<number>([
  CKR.SESSION_CLOSED,
  CKR.SESSION_HANDLE_INVALID,
  CKR.USER_NOT_LOGGED_IN,
  CKR.DEVICE_REMOVED,
  CKR.TOKEN_NOT_PRESENT,
  CKR.KEY_HANDLE_INVALID,
  CKR.OBJECT_HANDLE_INVALID,
  CKR.CRYPTOKI_NOT_INITIALIZED,
]);
/** The device is busy or failing for now: the job is retried later. */
const DEVICE_BUSY = new Set<number>([
  CKR.HOST_MEMORY,
  CKR.GENERAL_ERROR,
  CKR.FUNCTION_FAILED,
  CKR.DEVICE_ERROR,
  CKR.DEVICE_MEMORY,
  CKR.FUNCTION_CANCELED,
  CKR.OPERATION_ACTIVE,
  CKR.SESSION_COUNT,
]);
const PIN_WRONG = new Set<number>([CKR.PIN_INCORRECT, CKR.PIN_INVALID, CKR.PIN_LEN_RANGE]);
const PIN_LOCKED = new Set<number>([CKR.PIN_LOCKED, CKR.PIN_EXPIRED, CKR.USER_PIN_NOT_INITIALIZED]);
const MECHANISM = new Set<number>([
  CKR.MECHANISM_INVALID,
  CKR.MECHANISM_PARAM_INVALID,
  CKR.KEY_TYPE_INCONSISTENT,
  CKR.KEY_FUNCTION_NOT_PERMITTED,
]);

// The slice of the pkcs11js API used here (its .d.ts is not imported: see above).
type Handle = Buffer;
interface Attr {
  type: number;
  value?: number | boolean | string | Buffer;
}
interface Binding {
  PKCS11: new () => Lib;
}
interface Lib {
  load(path: string): void;
  C_Initialize(options?: { flags?: number }): void;
  C_GetInfo(): { manufacturerID: string; libraryDescription: string; libraryVersion: Version };
  C_GetSlotList(tokenPresent?: boolean): Handle[];
  C_GetSlotInfo(slot: Handle): { slotDescription: string; manufacturerID: string };
  C_GetTokenInfo(slot: Handle): {
    label: string;
    manufacturerID: string;
    model: string;
    serialNumber: string;
    flags: number;
    maxSessionCount: number;
    sessionCount: number;
  };
  C_GetMechanismInfo(slot: Handle, mech: number): { flags: number; minKeySize: number; maxKeySize: number };
  C_OpenSession(slot: Handle, flags: number): Handle;
  C_CloseSession(session: Handle): void;
  C_GetSessionInfo(session: Handle): { state: number };
  C_Login(session: Handle, userType: number, pin?: string): void;
  C_FindObjectsInit(session: Handle, template: Attr[]): void;
  C_FindObjects(session: Handle, max: number): Handle[];
  C_FindObjectsFinal(session: Handle): void;
  C_GetAttributeValue(session: Handle, object: Handle, template: Attr[]): { type: number; value?: Buffer }[];
  C_SignInit(session: Handle, mechanism: { mechanism: number }, key: Handle): void;
  C_Sign(session: Handle, data: Buffer, out: Buffer): Buffer;
  C_SignAsync(session: Handle, data: Buffer, out: Buffer): Promise<Buffer>;
}
interface Version {
  major: number;
  minor: number;
}

/** The CKR code of a binding error, or undefined for anything else (a bug, a TypeError). */
function ckr(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'number' && code > 0 ? code : undefined;
}
function ckrName(e: unknown): string {
  const m = /CKR_[A-Z_]+/.exec(String((e as Error)?.message ?? e));
  return m ? m[0] : `0x${(ckr(e) ?? 0).toString(16)}`;
}

let binding: Binding | undefined;
function loadBinding(uri: string): Binding {
  if (binding) return binding;
  try {
    binding = createRequire(import.meta.url)('pkcs11js') as Binding;
    return binding;
  } catch (e) {
    throw p11Error(
      'PKCS11_BINDING_MISSING',
      `${uri}: the PKCS#11 binding (npm package pkcs11js, an optional dependency built with node-gyp) is not installed or did not build: install a C++ toolchain and re-run npm ci (${(e as NodeJS.ErrnoException).code ?? 'load error'})`,
      uri,
    );
  }
}

/** One loaded Cryptoki library in this thread. */
interface Module {
  path: string;
  lib: Lib;
  /** Sessions of this thread, by slot id (hex). */
  sessions: Map<string, Session>;
  /** Serialises signing in this thread (SignInit+Sign pairs must not interleave on a session). */
  tail: Promise<unknown>;
  /** URI → slot key it matched (cleared with the slot's session). */
  slotOf: Map<string, string>;
}
interface Session {
  handle: Handle;
  slot: Handle;
}

const modules = new Map<string, Module>();

function moduleFor(path: string, uri: string): Module {
  let m = modules.get(path);
  if (m) return m;
  const b = loadBinding(uri);
  const lib = new b.PKCS11();
  try {
    lib.load(path);
  } catch (e) {
    throw p11Error(
      'PKCS11_MODULE_LOAD_FAILED',
      `${uri}: PKCS#11 module ${path} cannot be loaded (${String((e as Error).message).split('\n')[0]})`,
      uri,
    );
  }
  try {
    // OS locking: the library is entered from several threads of this process.
    lib.C_Initialize({ flags: CKF_OS_LOCKING_OK });
  } catch (e) {
    if (ckr(e) !== CKR.CRYPTOKI_ALREADY_INITIALIZED)
      throw p11Error('PKCS11_MODULE_LOAD_FAILED', `${uri}: C_Initialize failed with ${ckrName(e)}`, uri);
  }
  m = { path, lib, sessions: new Map(), tail: Promise.resolve(), slotOf: new Map() };
  modules.set(path, m);
  return m;
}

function reinitialize(m: Module): void {
  try {
    m.lib.C_Initialize({ flags: CKF_OS_LOCKING_OK });
  } catch {
    // CKR_CRYPTOKI_ALREADY_INITIALIZED (another thread was first), or a failure the next call reports
  }
}

const trimPad = (s: string): string => s.replace(/[\s\0]+$/, '');

function slotKey(slot: Handle): string {
  return slot.toString('hex');
}

function slotNumber(slot: Handle): bigint {
  return slot.length >= 8 ? slot.readBigUInt64LE(0) : BigInt(slot.readUInt32LE(0));
}

/** Slots whose token matches every token/slot/library attribute of the URI (RFC 7512 §2.3 "match"). */
function matchingSlots(m: Module, uri: Pkcs11Uri): Handle[] {
  const lib = m.lib;
  if (uri.libraryManufacturer !== undefined || uri.libraryDescription !== undefined || uri.libraryVersion) {
    const info = lib.C_GetInfo();
    if (uri.libraryManufacturer !== undefined && trimPad(info.manufacturerID) !== uri.libraryManufacturer)
      return [];
    if (uri.libraryDescription !== undefined && trimPad(info.libraryDescription) !== uri.libraryDescription)
      return [];
    const v = uri.libraryVersion;
    if (v && (info.libraryVersion.major !== v.major || info.libraryVersion.minor !== v.minor)) return [];
  }
  const out: Handle[] = [];
  for (const slot of lib.C_GetSlotList(true)) {
    if (uri.slotId !== undefined && slotNumber(slot) !== BigInt(uri.slotId)) continue;
    if (uri.slotDescription !== undefined || uri.slotManufacturer !== undefined) {
      const si = lib.C_GetSlotInfo(slot);
      if (uri.slotDescription !== undefined && trimPad(si.slotDescription) !== uri.slotDescription) continue;
      if (uri.slotManufacturer !== undefined && trimPad(si.manufacturerID) !== uri.slotManufacturer) continue;
    }
    let ti;
    try {
      ti = lib.C_GetTokenInfo(slot);
    } catch {
      continue; // token removed between the two calls, or not recognised
    }
    if (uri.token !== undefined && trimPad(ti.label) !== uri.token) continue;
    if (uri.manufacturer !== undefined && trimPad(ti.manufacturerID) !== uri.manufacturer) continue;
    if (uri.model !== undefined && trimPad(ti.model) !== uri.model) continue;
    if (uri.serial !== undefined && trimPad(ti.serialNumber) !== uri.serial) continue;
    out.push(slot);
  }
  return out;
}

function findSlot(m: Module, uri: Pkcs11Uri): Handle {
  const slots = matchingSlots(m, uri);
  if (slots.length === 0)
    throw p11Error(
      'PKCS11_TOKEN_NOT_FOUND',
      `${uri.text}: no token matches in ${m.path} (tokens present: ${describeTokens(m)})`,
      uri.text,
    );
  if (slots.length > 1)
    throw p11Error(
      'PKCS11_TOKEN_AMBIGUOUS',
      `${uri.text}: ${slots.length} tokens match in ${m.path}; add token=, serial= or slot-id=`,
      uri.text,
    );
  return slots[0]!;
}

function describeTokens(m: Module): string {
  const labels = m.lib.C_GetSlotList(true).flatMap((s) => {
    try {
      return [JSON.stringify(trimPad(m.lib.C_GetTokenInfo(s).label))];
    } catch {
      return [];
    }
  });
  return labels.length ? labels.join(', ') : 'none';
}

/** What a key needs to (re)establish its session: where the token is and how to log in. */
export interface TokenTarget {
  module: string;
  uri: Pkcs11Uri;
  /** The user PIN; undefined when none is configured (protected authentication path or no login). */
  pin: string | undefined;
}

/**
 * This thread's session on the target's token, opened and logged in on first use. Login is per
 * process: a session that is already in a user state (another thread logged in) is used as is.
 */
function session(t: TokenTarget): { m: Module; s: Session } {
  const m = moduleFor(t.module, t.uri.text);
  // The slot a URI resolved to is remembered until its session is dropped: no slot scan per signature.
  const known = m.slotOf.get(t.uri.text);
  if (known) {
    const s = m.sessions.get(known);
    if (s) return { m, s };
  }
  const slot = findSlot(m, t.uri);
  const k = slotKey(slot);
  m.slotOf.set(t.uri.text, k);
  let s = m.sessions.get(k);
  if (s) return { m, s };
  let handle: Handle;
  try {
    handle = m.lib.C_OpenSession(slot, CKF_SERIAL_SESSION);
  } catch (e) {
    throw classify(e, t.uri.text, 'C_OpenSession');
  }
  s = { handle, slot };
  try {
    login(m, s, t);
  } catch (e) {
    try {
      m.lib.C_CloseSession(handle);
    } catch {
      // already gone
    }
    throw e;
  }
  m.sessions.set(k, s);
  return { m, s };
}

function login(m: Module, s: Session, t: TokenTarget): void {
  const state = m.lib.C_GetSessionInfo(s.handle).state;
  if (state === CKS_RO_USER_FUNCTIONS || state === CKS_RW_USER_FUNCTIONS) return;
  const ti = m.lib.C_GetTokenInfo(s.slot);
  if (!(ti.flags & CKF_LOGIN_REQUIRED) && t.pin === undefined) return;
  if (ti.flags & CKF_USER_PIN_LOCKED)
    throw p11Error('PKCS11_PIN_LOCKED', `${t.uri.text}: the token's user PIN is locked`, t.uri.text);
  if (t.pin === undefined && !(ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH))
    throw p11Error(
      'PKCS11_PIN_MISSING',
      `${t.uri.text}: the token needs a login and no PIN is configured (pinEnv, pinFile or the URI's pin-source)`,
      t.uri.text,
    );
  // One wrong PIN less than a lock-out: do not spend the last try from an automated job.
  if (ti.flags & CKF_USER_PIN_FINAL_TRY)
    throw p11Error(
      'PKCS11_PIN_LOCKED',
      `${t.uri.text}: the token allows one more PIN try only; refusing to risk locking it (reset the counter with a correct login by hand)`,
      t.uri.text,
    );
  try {
    m.lib.C_Login(s.handle, CKU_USER, t.pin);
  } catch (e) {
    if (ckr(e) === CKR.USER_ALREADY_LOGGED_IN) return;
    throw classify(e, t.uri.text, 'C_Login');
  }
}

/**
 * Map a binding error to a typed one; the message names the URI (never a PIN) and the CKR name.
 * Exported for tests of the mapping (which codes are retried).
 */
export function classify(e: unknown, uri: string, op: string): CodedError {
  if (e instanceof CodedError) return e;
  const rv = ckr(e);
  const what = `${uri}: ${op} failed with ${ckrName(e)}`;
  if (rv === undefined) return p11Error('PKCS11_FAILED', `${uri}: ${op} failed: ${String(e)}`, uri);
  if (PIN_WRONG.has(rv)) return p11Error('PKCS11_PIN_WRONG', `${what} (the PIN is wrong)`, uri);
  if (PIN_LOCKED.has(rv)) return p11Error('PKCS11_PIN_LOCKED', what, uri);
  if (MECHANISM.has(rv))
    return p11Error('PKCS11_MECHANISM_UNSUPPORTED', `${what} (the key does not allow RSA PKCS#1 v1.5)`, uri);
  if (SESSION_LOST.has(rv)) return p11Error('PKCS11_SESSION_LOST', what, uri);
  if (DEVICE_BUSY.has(rv) || rv === CKR.TOKEN_NOT_RECOGNIZED)
    return p11Error('PKCS11_DEVICE_BUSY', what, uri);
  return p11Error('PKCS11_FAILED', what, uri);
}

function dropSession(m: Module, s: Session): void {
  const k = slotKey(s.slot);
  m.sessions.delete(k);
  for (const [uri, slot] of m.slotOf) if (slot === k) m.slotOf.delete(uri);
  try {
    m.lib.C_CloseSession(s.handle);
  } catch {
    // already closed by the token or another thread's C_CloseAllSessions
  }
}

function findObjects(m: Module, s: Session, template: Attr[]): Handle[] {
  m.lib.C_FindObjectsInit(s.handle, template);
  try {
    return m.lib.C_FindObjects(s.handle, MAX_FIND_OBJECTS);
  } finally {
    m.lib.C_FindObjectsFinal(s.handle);
  }
}

function objectTemplate(uri: Pkcs11Uri, cls: number): Attr[] {
  const t: Attr[] = [{ type: CKA_CLASS, value: cls }];
  if (uri.object !== undefined) t.push({ type: CKA_LABEL, value: uri.object });
  if (uri.id !== undefined) t.push({ type: CKA_ID, value: Buffer.from(uri.id) });
  return t;
}

function attr(m: Module, s: Session, h: Handle, type: number): Buffer | undefined {
  try {
    return m.lib.C_GetAttributeValue(s.handle, h, [{ type }])[0]?.value;
  } catch {
    return undefined; // CKR_ATTRIBUTE_TYPE_INVALID / _SENSITIVE: absent for our purpose
  }
}

function ulong(b: Buffer | undefined): number | undefined {
  if (!b || b.length === 0) return undefined;
  return b.length >= 8 ? Number(b.readBigUInt64LE(0)) : b.readUInt32LE(0);
}

interface FoundKey {
  handle: Handle;
  spki: Buffer;
  bits: number;
  id: Buffer | undefined;
  label: string | undefined;
}

function findKey(m: Module, s: Session, uri: Pkcs11Uri): FoundKey {
  if (uri.type !== undefined && uri.type !== 'private')
    throw p11Error(
      'PKCS11_KEY_NOT_FOUND',
      `${uri.text}: type=${uri.type} names no private key (use type=private or leave type out)`,
      uri.text,
    );
  const found = findObjects(m, s, objectTemplate(uri, CKO_PRIVATE_KEY));
  if (found.length === 0)
    throw p11Error(
      'PKCS11_KEY_NOT_FOUND',
      `${uri.text}: no private key with ${[uri.object !== undefined ? `label "${uri.object}"` : '', uri.id ? `id ${Buffer.from(uri.id).toString('hex')}` : ''].filter(Boolean).join(' and ') || 'any label'} on the token`,
      uri.text,
    );
  if (found.length > 1)
    throw p11Error(
      'PKCS11_KEY_AMBIGUOUS',
      `${uri.text}: ${found.length} private keys match; add object= or id=`,
      uri.text,
    );
  const handle = found[0]!;
  const keyType = ulong(attr(m, s, handle, CKA_KEY_TYPE));
  if (keyType !== CKK_RSA)
    throw p11Error(
      'PKCS11_MECHANISM_UNSUPPORTED',
      `${uri.text}: the key is not RSA (CKA_KEY_TYPE ${keyType ?? 'unknown'}); Authenticode (rsaEncryption) and MAR (ids 1, 2) sign with RSA PKCS#1 v1.5`,
      uri.text,
    );
  const sign = attr(m, s, handle, CKA_SIGN);
  if (sign && sign.length > 0 && sign[0] === 0)
    throw p11Error('PKCS11_MECHANISM_UNSUPPORTED', `${uri.text}: the key has CKA_SIGN false`, uri.text);
  const allowed = attr(m, s, handle, CKA_ALLOWED_MECHANISMS);
  if (allowed && allowed.length >= 8) {
    const mechs: number[] = [];
    for (let i = 0; i + 8 <= allowed.length; i += 8) mechs.push(Number(allowed.readBigUInt64LE(i)));
    if (!mechs.includes(CKM_RSA_PKCS))
      throw p11Error(
        'PKCS11_MECHANISM_UNSUPPORTED',
        `${uri.text}: the key's CKA_ALLOWED_MECHANISMS (${mechs.map((x) => `0x${x.toString(16)}`).join(', ')}) exclude CKM_RSA_PKCS`,
        uri.text,
      );
  }
  try {
    const mi = m.lib.C_GetMechanismInfo(s.slot, CKM_RSA_PKCS);
    if (!(mi.flags & CKF_SIGN)) throw new Error('no CKF_SIGN');
  } catch {
    throw p11Error(
      'PKCS11_MECHANISM_UNSUPPORTED',
      `${uri.text}: the token does not sign with CKM_RSA_PKCS`,
      uri.text,
    );
  }
  const n = attr(m, s, handle, CKA_MODULUS);
  const e = attr(m, s, handle, CKA_PUBLIC_EXPONENT);
  if (!n || !e)
    throw p11Error(
      'PKCS11_FAILED',
      `${uri.text}: the key's modulus or public exponent is unreadable`,
      uri.text,
    );
  const pub = createPublicKey({
    key: { kty: 'RSA', n: unsigned(n).toString('base64url'), e: unsigned(e).toString('base64url') },
    format: 'jwk',
  });
  const spki = pub.export({ type: 'spki', format: 'der' });
  const bits = pub.asymmetricKeyDetails?.modulusLength ?? unsigned(n).length * 8;
  const label = attr(m, s, handle, CKA_LABEL);
  return { handle, spki, bits, id: attr(m, s, handle, CKA_ID), label: label?.toString('utf8') };
}

function unsigned(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

/**
 * An RSA key in a PKCS#11 token. Nothing secret is held here but the PIN (for re-login after a lost
 * session), in a #private field, so neither JSON.stringify nor util.inspect shows it.
 */
export class Pkcs11Key implements SigningKey {
  readonly type = 'rsa' as const;
  readonly id: string;
  readonly bits: number;
  readonly publicKeyDer: Uint8Array;
  /** The URI without any secret, for messages and health output. */
  readonly uri: string;
  readonly #target: TokenTarget;
  #handle: Handle;

  constructor(target: TokenTarget, found: FoundKey) {
    this.#target = target;
    this.#handle = found.handle;
    this.uri = target.uri.text;
    this.publicKeyDer = new Uint8Array(found.spki);
    this.id = createHash('sha256').update(found.spki).digest('hex');
    this.bits = found.bits;
  }

  async signDigest(hash: HashName, digest: Uint8Array): Promise<Uint8Array> {
    const di = digestInfo(hash, digest);
    const t = this.#target;
    const m = moduleFor(t.module, this.uri);
    const run = async (): Promise<Buffer> => {
      let { s } = session(t);
      try {
        return await this.#sign(m, s, di);
      } catch (e) {
        if (!SESSION_LOST.has(ckr(e) ?? 0)) throw e;
        // The token dropped the session or the login (reset, removed and re-inserted, all sessions
        // closed): open a new session, log in again, find the key again (its handle may have
        // changed), and try once more. A second failure goes to the caller as retryable.
        dropSession(m, s);
        if (ckr(e) === CKR.CRYPTOKI_NOT_INITIALIZED) reinitialize(m);
        s = session(t).s;
        this.#handle = findKey(m, s, t.uri).handle;
        return await this.#sign(m, s, di);
      }
    };
    // One SignInit+Sign pair at a time per thread and module (async signing would interleave them).
    const result = m.tail.then(run, run);
    m.tail = result.catch(() => undefined);
    try {
      const sig = await result;
      return new Uint8Array(sig.buffer, sig.byteOffset, sig.length);
    } catch (e) {
      throw classify(e, this.uri, 'C_Sign');
    }
  }

  async #sign(m: Module, s: Session, di: Buffer): Promise<Buffer> {
    m.lib.C_SignInit(s.handle, { mechanism: CKM_RSA_PKCS }, this.#handle);
    const out = Buffer.alloc(this.bits / 8);
    // Worker threads sign synchronously (they exist to do CPU work); the main thread hands the call to
    // the libuv pool so the event loop (HTTP, Redis, the queue) keeps running.
    return isMainThread ? m.lib.C_SignAsync(s.handle, di, out) : m.lib.C_Sign(s.handle, di, out);
  }

  toJSON(): { type: 'rsa'; id: string; bits: number; backend: 'pkcs11'; uri: string } {
    return { type: this.type, id: this.id, bits: this.bits, backend: 'pkcs11', uri: this.uri };
  }
}

/** Parse and check a URI as a key reference: `module-name` is not resolved (no p11-kit config). */
export function keyUri(ref: string): Pkcs11Uri {
  const uri = parsePkcs11Uri(ref);
  if (uri.moduleName !== undefined)
    throw new ConfigError(
      'PKCS11_URI_INVALID' satisfies Pkcs11UriErrorCode,
      `PKCS#11 URI ${uri.text}: module-name is not supported; set pkcs11.module in the config, $${PKCS11_MODULE_ENV}, or module-path`,
    );
  return uri;
}

/** Load the private key a URI names: token found, session opened, logged in, key checked for RSA PKCS#1. */
export function loadPkcs11Key(target: TokenTarget): Pkcs11Key {
  const { m, s } = session(target);
  try {
    return new Pkcs11Key(target, findKey(m, s, target.uri));
  } catch (e) {
    if (e instanceof CodedError) throw e;
    throw classify(e, target.uri.text, 'C_FindObjects');
  }
}

/**
 * The key's certificate chain from the token: the certificate with the key's id (else its label),
 * then the issuers found among the token's other certificates (signer first).
 */
export function tokenChain(target: TokenTarget, key: Pkcs11Key): Uint8Array[] {
  const { m, s } = session(target);
  const uri = target.uri;
  const certs = findObjects(m, s, [{ type: CKA_CLASS, value: CKO_CERTIFICATE }]).flatMap((h) => {
    const v = attr(m, s, h, CKA_VALUE);
    return v ? [{ der: new Uint8Array(v), id: attr(m, s, h, CKA_ID), label: attr(m, s, h, CKA_LABEL) }] : [];
  });
  const spki = Buffer.from(key.publicKeyDer);
  const leaf = certs.find((c) => {
    try {
      return new X509Certificate(c.der).publicKey.export({ type: 'spki', format: 'der' }).equals(spki);
    } catch {
      return false;
    }
  });
  if (!leaf)
    throw p11Error(
      'PKCS11_CERT_NOT_FOUND',
      `${uri.text}: the token holds no certificate for this key${certs.length ? ` (${certs.length} other certificate(s))` : ''}; import it (pkcs11-tool --write-object cert.der --type cert) or set authenticode.certChain`,
      uri.text,
    );
  if (certs.length > MAX_CHAIN_CERTS)
    throw p11Error(
      'PKCS11_CERT_NOT_FOUND',
      `${uri.text}: ${certs.length} certificates on the token (limit ${MAX_CHAIN_CERTS}); set authenticode.certChain`,
      uri.text,
    );
  return orderChain(
    certs.map((c) => c.der),
    key.publicKeyDer,
    'the token',
  );
}

export interface TokenProbe {
  uri: string;
  /** The module loaded and a token matching the URI is present. */
  reachable: boolean;
  /** This process holds a logged-in session on it. */
  loggedIn: boolean;
  /** The URI names exactly one usable RSA private key. */
  keyPresent: boolean;
  /** Sessions this process has open on the token / the token's limit (0 = no limit reported). */
  sessions?: { open: number; max: number };
  error?: { code: string; message: string };
}

/** Health: is the token reachable, are we logged in, is the key there? Signs nothing. */
export function probeToken(target: TokenTarget): TokenProbe {
  const out: TokenProbe = { uri: target.uri.text, reachable: false, loggedIn: false, keyPresent: false };
  try {
    const m = moduleFor(target.module, target.uri.text);
    const slot = findSlot(m, target.uri);
    out.reachable = true;
    const ti = m.lib.C_GetTokenInfo(slot);
    out.sessions = { open: ti.sessionCount, max: ti.maxSessionCount };
    let s: Session;
    try {
      s = session(target).s;
    } catch (e) {
      const err = classify(e, target.uri.text, 'C_OpenSession');
      if (err.code !== 'PKCS11_SESSION_LOST') throw err;
      // A stale session of ours: drop it and open a fresh one.
      const stale = m.sessions.get(slotKey(slot));
      if (stale) dropSession(m, stale);
      s = session(target).s;
    }
    let state: number;
    try {
      state = m.lib.C_GetSessionInfo(s.handle).state;
    } catch (e) {
      if (!SESSION_LOST.has(ckr(e) ?? 0)) throw e;
      dropSession(m, s);
      s = session(target).s;
      state = m.lib.C_GetSessionInfo(s.handle).state;
    }
    out.loggedIn = state === CKS_RO_USER_FUNCTIONS || state === CKS_RW_USER_FUNCTIONS;
    findKey(m, s, target.uri);
    out.keyPresent = true;
  } catch (e) {
    const err = classify(e, target.uri.text, 'probe');
    out.error = { code: err.code, message: err.message };
  }
  return out;
}

/** For tests and diagnostics: the number of sessions this thread holds, over all modules. */
export function threadSessionCount(): { thread: number; sessions: number } {
  let n = 0;
  for (const m of modules.values()) n += m.sessions.size;
  return { thread: threadId, sessions: n };
}
