/**
 * Minimal DER encoder and offset-keeping decoder (X.690) for the Authenticode and RFC 3161 code.
 *
 * Why not forge.asn1 here: signatures cover exact bytes (a certificate's issuer Name and serial, the
 * signed attributes as received), and forge re-encodes what it parses. This reader returns views into
 * the input with their offsets, so verification hashes the received bytes and building copies
 * certificates verbatim. Hostile-input limits are the constants below; nesting depth needs no limit because
 * callers walk a fixed schema (no recursion on input). Only definite lengths (DER) are accepted, as
 * Authenticode signatures are DER (osslsigncode, signtool, jsign all emit DER).
 */
import { FormatError } from '../../errors.js';

/** Most children decoded in one constructed element. */
export const MAX_DER_CHILDREN = 10_000;
/** Longest OBJECT IDENTIFIER accepted, in bytes. */
export const MAX_OID_BYTES = 64;

const FORMAT = 'asn1';

/** The DER reader's own codes; `expectTag` raises the code its caller names (default ASN1_UNEXPECTED). */
export type Asn1ErrorCode =
  | 'ASN1_BAD_INTEGER'
  | 'ASN1_BAD_LENGTH'
  | 'ASN1_BAD_OID'
  | 'ASN1_BAD_TIME'
  | 'ASN1_INDEFINITE_LENGTH'
  | 'ASN1_NOT_CONSTRUCTED'
  | 'ASN1_TOO_MANY_CHILDREN'
  | 'ASN1_TRAILING_DATA'
  | 'ASN1_TRUNCATED'
  | 'ASN1_UNEXPECTED'
  | 'ASN1_UNSUPPORTED_TAG';

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag byte: `[n]` constructed (0xA0 | n) or primitive (0x80 | n). */
export function ctxTag(n: number, constructed = true): number {
  return (constructed ? 0xa0 : 0x80) | n;
}

// ---------------------------------------------------------------------------------------------
// Encoding

function lengthBytes(len: number): Uint8Array {
  if (len < 0x80) return Uint8Array.of(len);
  const out: number[] = [];
  for (let v = len; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return Uint8Array.from([0x80 | out.length, ...out]);
}

/** One TLV: `tag` (a single identifier byte) around the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const lb = lengthBytes(len);
  const out = new Uint8Array(1 + lb.length + len);
  out[0] = tag;
  out.set(lb, 1);
  let at = 1 + lb.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Uint8Array => tlv(TAG.SEQUENCE, ...parts);

/** A DER SET OF: elements sorted by their encodings (X.690 11.6). */
export function setOf(...parts: Uint8Array[]): Uint8Array {
  return tlv(TAG.SET, ...[...parts].sort(compareBytes));
}

export const octetString = (b: Uint8Array): Uint8Array => tlv(TAG.OCTET_STRING, b);
export const derNull = (): Uint8Array => Uint8Array.of(TAG.NULL, 0);
export const explicit = (n: number, ...parts: Uint8Array[]): Uint8Array => tlv(ctxTag(n), ...parts);

/** A non-negative INTEGER from unsigned big-endian bytes (adds the sign byte when needed). */
export function uintFromBytes(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  if (v.length === 0) return Uint8Array.of(TAG.INTEGER, 1, 0);
  return (v[0]! & 0x80) !== 0 ? tlv(TAG.INTEGER, Uint8Array.of(0), v) : tlv(TAG.INTEGER, v);
}

export function integer(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`integer ${n} not a non-negative safe integer`);
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  return uintFromBytes(Uint8Array.from(bytes));
}

export function boolean(v: boolean): Uint8Array {
  return Uint8Array.of(TAG.BOOLEAN, 1, v ? 0xff : 0);
}

export function oid(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map((s) => {
    if (!/^\d+$/.test(s)) throw new RangeError(`bad OID ${dotted}`);
    return Number(s);
  });
  if (arcs.length < 2 || arcs[0]! > 2) throw new RangeError(`bad OID ${dotted}`);
  const body: number[] = [];
  const push = (v: number): void => {
    const tmp = [v & 0x7f];
    for (v = Math.floor(v / 128); v > 0; v = Math.floor(v / 128)) tmp.unshift((v & 0x7f) | 0x80);
    body.push(...tmp);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return tlv(TAG.OID, Uint8Array.from(body));
}

/** AlgorithmIdentifier with explicit NULL parameters (what signtool/osslsigncode emit for hashes and RSA). */
export function algorithmId(dotted: string): Uint8Array {
  return seq(oid(dotted), derNull());
}

/** UTCTime for 1950..2049 (RFC 5280 4.1.2.5.1), else GeneralizedTime. */
export function time(d: Date): Uint8Array {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  const y = d.getUTCFullYear();
  const rest = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, ascii(`${p(y % 100)}${rest}`));
  return tlv(TAG.GENERALIZED_TIME, ascii(`${p(y, 4)}${rest}`));
}

export function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) throw new RangeError(`non-ASCII character at index ${i}`);
    out[i] = c;
  }
  return out;
}

/** UTF-16BE code units, the BMPString encoding Windows uses for SpcString. */
export function utf16be(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 2);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out[2 * i] = c >> 8;
    out[2 * i + 1] = c & 0xff;
  }
  return out;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && compareBytes(a, b) === 0;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** One decoded element: views into the input, never copies. */
export interface DerNode {
  tag: number;
  /** Offset of the tag byte within the buffer given to `decode`. */
  offset: number;
  headerLength: number;
  /** The whole TLV. */
  der: Uint8Array;
  /** The contents octets. */
  value: Uint8Array;
  constructed: boolean;
}

function fail(code: string, message: string, offset: number): never {
  throw new FormatError(FORMAT, code, message, offset);
}

/** Decode the single element starting at `offset`; `limit` bounds it (default: end of `bytes`). */
export function decodeAt(bytes: Uint8Array, offset: number, limit = bytes.length): DerNode {
  if (offset + 2 > limit)
    fail(
      'ASN1_TRUNCATED' satisfies Asn1ErrorCode,
      `element header needs 2 bytes, ${limit - offset} left`,
      offset,
    );
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f)
    fail('ASN1_UNSUPPORTED_TAG' satisfies Asn1ErrorCode, `multi-byte tag 0x${tag.toString(16)}`, offset);
  const first = bytes[offset + 1]!;
  let len: number;
  let hdr = 2;
  if (first < 0x80) len = first;
  else if (first === 0x80)
    fail('ASN1_INDEFINITE_LENGTH' satisfies Asn1ErrorCode, 'indefinite length is not DER', offset + 1);
  else {
    const n = first & 0x7f;
    if (n > 4) fail('ASN1_BAD_LENGTH' satisfies Asn1ErrorCode, `length of ${n} bytes`, offset + 1);
    if (offset + 2 + n > limit)
      fail('ASN1_TRUNCATED' satisfies Asn1ErrorCode, `length needs ${n} bytes`, offset + 1);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + bytes[offset + 2 + i]!;
    hdr = 2 + n;
  }
  const end = offset + hdr + len;
  if (end > limit)
    fail(
      'ASN1_TRUNCATED' satisfies Asn1ErrorCode,
      `element of ${len} bytes overruns its container by ${end - limit}`,
      offset,
    );
  return {
    tag,
    offset,
    headerLength: hdr,
    der: bytes.subarray(offset, end),
    value: bytes.subarray(offset + hdr, end),
    constructed: (tag & 0x20) !== 0,
  };
}

/** Decode a buffer holding exactly one element (trailing bytes are an error). */
export function decode(bytes: Uint8Array): DerNode {
  const n = decodeAt(bytes, 0);
  if (n.der.length !== bytes.length)
    fail(
      'ASN1_TRAILING_DATA' satisfies Asn1ErrorCode,
      `${bytes.length - n.der.length} bytes after the element`,
      n.der.length,
    );
  return n;
}

/** The children of a constructed element. */
export function children(node: DerNode): DerNode[] {
  if (!node.constructed)
    fail(
      'ASN1_NOT_CONSTRUCTED' satisfies Asn1ErrorCode,
      `tag 0x${node.tag.toString(16)} is primitive`,
      node.offset,
    );
  const out: DerNode[] = [];
  const base = node.offset + node.headerLength;
  let at = 0;
  while (at < node.value.length) {
    if (out.length >= MAX_DER_CHILDREN)
      fail(
        'ASN1_TOO_MANY_CHILDREN' satisfies Asn1ErrorCode,
        `more than ${MAX_DER_CHILDREN} elements`,
        base + at,
      );
    const c = decodeAt(node.value, at);
    out.push({ ...c, offset: base + c.offset });
    at += c.der.length;
  }
  return out;
}

/** Check the tag, or throw `code`. */
export function expectTag(
  node: DerNode | undefined,
  tag: number,
  what: string,
  code = 'ASN1_UNEXPECTED' satisfies Asn1ErrorCode,
): DerNode {
  if (!node) fail(code, `${what} missing`, 0);
  if (node.tag !== tag)
    fail(code, `${what}: expected tag 0x${tag.toString(16)}, found 0x${node.tag.toString(16)}`, node.offset);
  return node;
}

export function readOid(node: DerNode): string {
  if (node.tag !== TAG.OID)
    fail(
      'ASN1_UNEXPECTED' satisfies Asn1ErrorCode,
      `expected OID, found tag 0x${node.tag.toString(16)}`,
      node.offset,
    );
  const v = node.value;
  if (v.length === 0 || v.length > MAX_OID_BYTES)
    fail('ASN1_BAD_OID' satisfies Asn1ErrorCode, `OID of ${v.length} bytes`, node.offset);
  const arcs: number[] = [];
  let cur = 0;
  for (let i = 0; i < v.length; i++) {
    cur = cur * 128 + (v[i]! & 0x7f);
    if ((v[i]! & 0x80) === 0) {
      if (arcs.length === 0) {
        const first = cur < 80 ? Math.floor(cur / 40) : 2;
        arcs.push(first, cur - first * 40);
      } else arcs.push(cur);
      cur = 0;
    } else if (i === v.length - 1)
      fail('ASN1_BAD_OID' satisfies Asn1ErrorCode, 'OID ends inside an arc', node.offset);
  }
  return arcs.join('.');
}

/** A small non-negative INTEGER as a number (versions, statuses). */
export function readSmallInt(node: DerNode): number {
  if (
    node.tag !== TAG.INTEGER ||
    node.value.length === 0 ||
    node.value.length > 6 ||
    (node.value[0]! & 0x80) !== 0
  )
    fail(
      'ASN1_BAD_INTEGER' satisfies Asn1ErrorCode,
      `expected a small non-negative INTEGER, found tag 0x${node.tag.toString(16)}`,
      node.offset,
    );
  let n = 0;
  for (const b of node.value) n = n * 256 + b;
  return n;
}

/** UTCTime / GeneralizedTime (with optional fractional seconds, 'Z' only) as a Date. */
export function readTime(node: DerNode): Date {
  const s = Buffer.from(node.value).toString('latin1');
  let m: RegExpMatchArray | null;
  if (node.tag === TAG.UTC_TIME && (m = s.match(/^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/))) {
    const yy = Number(m[1]);
    return new Date(Date.UTC(yy < 50 ? 2000 + yy : 1900 + yy, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  }
  if (
    node.tag === TAG.GENERALIZED_TIME &&
    (m = s.match(/^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\.\d+)?Z$/))
  ) {
    const ms = m[7] ? Math.round(Number(m[7]) * 1000) : 0;
    return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, ms));
  }
  return fail(
    'ASN1_BAD_TIME' satisfies Asn1ErrorCode,
    `bad time ${JSON.stringify(s.slice(0, 40))}`,
    node.offset,
  );
}
