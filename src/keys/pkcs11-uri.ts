import { ConfigError } from '../errors.js';

/**
 * RFC 7512 PKCS#11 URIs (`pkcs11:token=marsign-release;object=codesign?pin-source=file:pin.txt`), the
 * key references osslsigncode, jsign and p11-kit accept. Parsing is strict: unknown standard
 * attributes, repeated attributes, bad percent-encoding and characters the grammar does not allow
 * are errors. `pin-value` is refused (secrets are never inline) and never echoed.
 */

export type Pkcs11UriErrorCode = 'PKCS11_URI_INVALID' | 'PKCS11_URI_PIN_INLINE';

/** Environment variable that overrides the config's `pkcs11.module` (the PKCS#11 library path). */
export const PKCS11_MODULE_ENV = 'MARSIGN_PKCS11_MODULE';

/** A URI longer than this is not a key reference (the grammar has no limit; configs should). */
export const MAX_PKCS11_URI_LENGTH = 2048;

/** RFC 7512 §2.3 path attributes (the ones matched against the token, slot, library and object). */
export const PATH_ATTRIBUTES = [
  'token',
  'manufacturer',
  'serial',
  'model',
  'library-manufacturer',
  'library-description',
  'library-version',
  'slot-description',
  'slot-manufacturer',
  'slot-id',
  'object',
  'type',
  'id',
] as const;
export type PathAttribute = (typeof PATH_ATTRIBUTES)[number];

/** RFC 7512 §2.3 query attributes. */
export const QUERY_ATTRIBUTES = ['pin-source', 'pin-value', 'module-name', 'module-path'] as const;
export type QueryAttribute = (typeof QUERY_ATTRIBUTES)[number];

/** RFC 7512 §2.3 pk11-type values. */
export const OBJECT_TYPES = ['public', 'private', 'cert', 'secret-key', 'data'] as const;
export type ObjectType = (typeof OBJECT_TYPES)[number];

export interface Pkcs11Uri {
  /** Path attributes, percent-decoded (`id` is bytes, kept apart). */
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  libraryManufacturer?: string;
  libraryDescription?: string;
  libraryVersion?: { major: number; minor: number };
  slotDescription?: string;
  slotManufacturer?: string;
  slotId?: number;
  object?: string;
  type?: ObjectType;
  id?: Uint8Array;
  /** Query: where the PIN is (a file path; `file:` URIs are reduced to their path). */
  pinSource?: string;
  moduleName?: string;
  modulePath?: string;
  /** Vendor attributes (`x-...`), decoded; kept, not interpreted. */
  vendor: Record<string, string>;
  /** The URI as written (without any pin-value: a URI with one is refused). */
  text: string;
}

// RFC 7512 §2.3: pk11-res-avail (path values) and pk11-qres-avail (query values), beside unreserved
// characters (RFC 3986 §2.3) and pct-encoded triplets.
const UNRESERVED = 'A-Za-z0-9\\-._~';
const PATH_VALUE = new RegExp(`^(?:[${UNRESERVED}:\\[\\]@!$'()*+,=&]|%[0-9A-Fa-f]{2})*$`);
const QUERY_VALUE = new RegExp(`^(?:[${UNRESERVED}:\\[\\]@!$'()*+,;/?|]|%[0-9A-Fa-f]{2})*$`);
const ATTR_NAME = /^[a-z][a-z0-9-]*$/;

function fail(code: Pkcs11UriErrorCode, text: string, why: string): never {
  throw new ConfigError(code, `PKCS#11 URI ${text}: ${why}`, { details: { uri: text } });
}

/** Bytes of a percent-encoded value (RFC 3986 §2.1). */
function pctBytes(v: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < v.length; i++) {
    if (v[i] === '%') {
      out.push(parseInt(v.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(v.charCodeAt(i));
  }
  return new Uint8Array(out);
}

function pctText(v: string, text: string, name: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(pctBytes(v));
  } catch {
    return fail('PKCS11_URI_INVALID', text, `${name} is not UTF-8 after percent-decoding`);
  }
}

/** Whether a key reference is a PKCS#11 URI (scheme names are case-insensitive, RFC 3986 §3.1). */
export function isPkcs11Uri(ref: string): boolean {
  return /^pkcs11:/i.test(ref);
}

/** The URI with every query attribute removed except `pin-source`, for messages and health output. */
export function displayUri(ref: string): string {
  const q = ref.indexOf('?');
  if (q < 0) return ref;
  const kept = ref
    .slice(q + 1)
    .split('&')
    .filter((a) => a.startsWith('pin-source=') || a.startsWith('module-'));
  return kept.length ? `${ref.slice(0, q)}?${kept.join('&')}` : ref.slice(0, q);
}

export function parsePkcs11Uri(ref: string): Pkcs11Uri {
  // Never quote a URI that carries a PIN inline; refuse it before anything else looks at it.
  const safe = displayUri(ref);
  if (/[?&]pin-value=/i.test(ref))
    fail(
      'PKCS11_URI_PIN_INLINE',
      safe,
      'pin-value is refused: the PIN comes from pinEnv/pinFile or the URI pin-source, never inline',
    );
  if (ref.length > MAX_PKCS11_URI_LENGTH)
    fail('PKCS11_URI_INVALID', safe.slice(0, 64) + '...', `longer than ${MAX_PKCS11_URI_LENGTH} characters`);
  if (!isPkcs11Uri(ref)) fail('PKCS11_URI_INVALID', safe, 'does not start with "pkcs11:"');
  if (ref.includes('#')) fail('PKCS11_URI_INVALID', safe, 'a fragment ("#") is not allowed');
  const body = ref.slice('pkcs11:'.length);
  const q = body.indexOf('?');
  const path = q < 0 ? body : body.slice(0, q);
  const query = q < 0 ? undefined : body.slice(q + 1);
  const uri: Pkcs11Uri = { vendor: {}, text: safe };
  const seen = new Set<string>();

  const attrs = (part: string, sep: string, where: 'path' | 'query'): [string, string][] => {
    if (part === '') return [];
    return part.split(sep).map((a) => {
      const eq = a.indexOf('=');
      if (eq <= 0) fail('PKCS11_URI_INVALID', safe, `${where} attribute "${a.slice(0, 40)}" has no "name="`);
      const name = a.slice(0, eq).toLowerCase();
      const value = a.slice(eq + 1);
      if (!ATTR_NAME.test(name))
        fail('PKCS11_URI_INVALID', safe, `"${a.slice(0, eq).slice(0, 40)}" is not an attribute name`);
      if (!(where === 'path' ? PATH_VALUE : QUERY_VALUE).test(value))
        fail(
          'PKCS11_URI_INVALID',
          safe,
          `${name} has a character that must be percent-encoded, or a bad %XX (RFC 7512 §2.3)`,
        );
      // §2.3: "An attribute MUST NOT appear more than once" (path), likewise for the query here.
      if (seen.has(`${where}:${name}`)) fail('PKCS11_URI_INVALID', safe, `${name} appears more than once`);
      seen.add(`${where}:${name}`);
      return [name, value];
    });
  };

  for (const [name, raw] of attrs(path, ';', 'path')) {
    const text = (): string => pctText(raw, safe, name);
    switch (name) {
      case 'token':
        uri.token = text();
        break;
      case 'manufacturer':
        uri.manufacturer = text();
        break;
      case 'serial':
        uri.serial = text();
        break;
      case 'model':
        uri.model = text();
        break;
      case 'library-manufacturer':
        uri.libraryManufacturer = text();
        break;
      case 'library-description':
        uri.libraryDescription = text();
        break;
      case 'library-version': {
        const m = /^(\d{1,3})(?:\.(\d{1,3}))?$/.exec(text());
        if (!m) fail('PKCS11_URI_INVALID', safe, 'library-version must be "major[.minor]"');
        uri.libraryVersion = { major: Number(m[1]), minor: Number(m[2] ?? 0) };
        break;
      }
      case 'slot-description':
        uri.slotDescription = text();
        break;
      case 'slot-manufacturer':
        uri.slotManufacturer = text();
        break;
      case 'slot-id': {
        const t = text();
        if (!/^\d{1,20}$/.test(t)) fail('PKCS11_URI_INVALID', safe, 'slot-id must be a decimal number');
        uri.slotId = Number(t);
        break;
      }
      case 'object':
        uri.object = text();
        break;
      case 'type': {
        const t = text();
        if (!(OBJECT_TYPES as readonly string[]).includes(t))
          fail('PKCS11_URI_INVALID', safe, `type must be one of ${OBJECT_TYPES.join(', ')}`);
        uri.type = t as ObjectType;
        break;
      }
      case 'id':
        uri.id = pctBytes(raw);
        break;
      default:
        // §2.3: vendor-specific attributes are allowed; anything else is a typo or unsupported.
        if (!name.startsWith('x-'))
          fail(
            'PKCS11_URI_INVALID',
            safe,
            `unknown path attribute "${name}" (known: ${PATH_ATTRIBUTES.join(', ')}; vendor ones start "x-")`,
          );
        uri.vendor[name] = text();
    }
  }
  if (query !== undefined) {
    for (const [name, raw] of attrs(query, '&', 'query')) {
      const text = pctText(raw, safe, name);
      switch (name) {
        case 'pin-source': {
          // §2.3: a URI or a file name. Only files: a "|command" source would run a program.
          if (text.startsWith('|'))
            fail('PKCS11_URI_INVALID', safe, 'pin-source "|command" is not supported: give a file');
          if (/^[a-z][a-z0-9+.-]*:/i.test(text) && !/^file:/i.test(text))
            fail('PKCS11_URI_INVALID', safe, 'pin-source must be a file name or a file: URI');
          const p = /^file:/i.test(text) ? text.replace(/^file:(\/\/(localhost)?(?=\/))?/i, '') : text;
          if (p === '') fail('PKCS11_URI_INVALID', safe, 'pin-source is empty');
          uri.pinSource = p;
          break;
        }
        case 'module-name':
          uri.moduleName = text;
          break;
        case 'module-path':
          uri.modulePath = text;
          break;
        default:
          if (!name.startsWith('x-'))
            fail(
              'PKCS11_URI_INVALID',
              safe,
              `unknown query attribute "${name}" (known: pin-source, module-name, module-path; vendor ones start "x-")`,
            );
          uri.vendor[name] = text;
      }
    }
  }
  return uri;
}
