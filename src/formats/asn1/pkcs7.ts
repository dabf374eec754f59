/**
 * Reading PKCS#7 v1.5 / CMS SignedData (RFC 2315 9.1, RFC 5652 5) into views of the received bytes:
 * enough for Authenticode signatures and RFC 3161 timestamp tokens. Limits: MAX_CERTIFICATES,
 * MAX_SIGNER_INFOS, MAX_ATTRIBUTES; everything else is bounded by the schema.
 */
import { FormatError } from '../../errors.js';
import { children, ctxTag, decode, expectTag, readOid, readSmallInt, TAG, type DerNode } from './der.js';
import { OID } from './oids.js';

export const MAX_CERTIFICATES = 64;
export const MAX_SIGNER_INFOS = 16;
export const MAX_ATTRIBUTES = 64;

export type Pkcs7ErrorCode = 'PKCS7_MALFORMED';

const CODE = 'PKCS7_MALFORMED' satisfies Pkcs7ErrorCode;

function bad(message: string, offset: number): never {
  throw new FormatError('pkcs7', CODE, message, offset);
}

export interface Attribute {
  oid: string;
  /** The values inside the SET. */
  values: DerNode[];
  node: DerNode;
}

export interface SignerInfo {
  node: DerNode;
  version: number;
  /** issuerAndSerialNumber children (issuer Name, serial INTEGER) when the sid is one. */
  issuerDer?: Uint8Array;
  serialDer?: Uint8Array;
  /** subjectKeyIdentifier contents when the sid is `[0]` (CMS v3). */
  subjectKeyId?: Uint8Array;
  digestAlgorithm: string;
  /** The `[0] IMPLICIT` signed attributes as received (tag 0xA0). */
  signedAttrsNode?: DerNode;
  signedAttrs: Attribute[];
  signatureAlgorithm: string;
  signature: Uint8Array;
  unsignedAttrsNode?: DerNode;
  unsignedAttrs: Attribute[];
}

export interface SignedData {
  /** The whole ContentInfo. */
  node: DerNode;
  signedDataNode: DerNode;
  version: number;
  digestAlgorithms: string[];
  contentType: string;
  /** The element inside the encapsulated content's `[0] EXPLICIT` (a SEQUENCE in Authenticode, an OCTET STRING in CMS). */
  content?: DerNode;
  certificates: DerNode[];
  signerInfos: SignerInfo[];
}

function readAttributes(set: DerNode): Attribute[] {
  const list = children(set);
  if (list.length > MAX_ATTRIBUTES) bad(`${list.length} attributes (max ${MAX_ATTRIBUTES})`, set.offset);
  return list.map((a) => {
    const [type, values] = children(expectTag(a, TAG.SEQUENCE, 'Attribute', CODE));
    return {
      oid: readOid(expectTag(type, TAG.OID, 'Attribute type', CODE)),
      values: children(expectTag(values, TAG.SET, 'Attribute values', CODE)),
      node: a,
    };
  });
}

function readSignerInfo(node: DerNode): SignerInfo {
  const f = children(expectTag(node, TAG.SEQUENCE, 'SignerInfo', CODE));
  let i = 0;
  const version = readSmallInt(expectTag(f[i++], TAG.INTEGER, 'SignerInfo version', CODE));
  const sid = f[i++];
  const out: Partial<SignerInfo> = { node, version };
  if (sid?.tag === TAG.SEQUENCE) {
    const [issuer, serial] = children(sid);
    out.issuerDer = expectTag(issuer, TAG.SEQUENCE, 'issuer', CODE).der;
    out.serialDer = expectTag(serial, TAG.INTEGER, 'serialNumber', CODE).der;
  } else if (sid?.tag === ctxTag(0, false)) out.subjectKeyId = sid.value;
  else
    bad(
      'SignerInfo sid is neither issuerAndSerialNumber nor subjectKeyIdentifier',
      sid?.offset ?? node.offset,
    );
  out.digestAlgorithm = readOid(
    expectTag(
      children(expectTag(f[i++], TAG.SEQUENCE, 'digestAlgorithm', CODE))[0],
      TAG.OID,
      'digestAlgorithm',
      CODE,
    ),
  );
  out.signedAttrs = [];
  if (f[i]?.tag === ctxTag(0)) {
    out.signedAttrsNode = f[i]!;
    out.signedAttrs = readAttributes(f[i++]!);
  }
  out.signatureAlgorithm = readOid(
    expectTag(
      children(expectTag(f[i++], TAG.SEQUENCE, 'signatureAlgorithm', CODE))[0],
      TAG.OID,
      'signatureAlgorithm',
      CODE,
    ),
  );
  out.signature = expectTag(f[i++], TAG.OCTET_STRING, 'signature', CODE).value;
  out.unsignedAttrs = [];
  if (f[i]?.tag === ctxTag(1)) {
    out.unsignedAttrsNode = f[i]!;
    out.unsignedAttrs = readAttributes(f[i++]!);
  }
  if (i !== f.length) bad(`${f.length - i} unexpected elements at the end of SignerInfo`, f[i]!.offset);
  return out as SignerInfo;
}

/** Parse a ContentInfo holding SignedData (the whole of `der`). */
export function parseSignedData(der: Uint8Array): SignedData {
  const ci = expectTag(decode(der), TAG.SEQUENCE, 'ContentInfo', CODE);
  const [typeNode, wrapped] = children(ci);
  const type = readOid(expectTag(typeNode, TAG.OID, 'ContentInfo contentType', CODE));
  if (type !== OID.signedData) bad(`ContentInfo type ${type} is not signedData`, typeNode!.offset);
  const sd = expectTag(
    children(expectTag(wrapped, ctxTag(0), 'ContentInfo content', CODE))[0],
    TAG.SEQUENCE,
    'SignedData',
    CODE,
  );
  const f = children(sd);
  let i = 0;
  const version = readSmallInt(expectTag(f[i++], TAG.INTEGER, 'SignedData version', CODE));
  const digestAlgorithms = children(expectTag(f[i++], TAG.SET, 'digestAlgorithms', CODE)).map((a) =>
    readOid(
      expectTag(
        children(expectTag(a, TAG.SEQUENCE, 'AlgorithmIdentifier', CODE))[0],
        TAG.OID,
        'algorithm',
        CODE,
      ),
    ),
  );
  const eci = children(expectTag(f[i++], TAG.SEQUENCE, 'contentInfo', CODE));
  const contentType = readOid(expectTag(eci[0], TAG.OID, 'content type', CODE));
  let content: DerNode | undefined;
  if (eci[1]) content = children(expectTag(eci[1], ctxTag(0), 'content', CODE))[0];
  let certificates: DerNode[] = [];
  if (f[i]?.tag === ctxTag(0)) {
    certificates = children(f[i++]!).filter((c) => c.tag === TAG.SEQUENCE);
    if (certificates.length > MAX_CERTIFICATES)
      bad(`${certificates.length} certificates (max ${MAX_CERTIFICATES})`, f[i - 1]!.offset);
  }
  if (f[i]?.tag === ctxTag(1)) i++; // crls: not used by Authenticode
  const sis = children(expectTag(f[i], TAG.SET, 'signerInfos', CODE));
  if (i + 1 !== f.length) bad(`${f.length - i - 1} unexpected elements after signerInfos`, f[i + 1]!.offset);
  if (sis.length > MAX_SIGNER_INFOS)
    bad(`${sis.length} signerInfos (max ${MAX_SIGNER_INFOS})`, sis[0]!.offset);
  return {
    node: ci,
    signedDataNode: sd,
    version,
    digestAlgorithms,
    contentType,
    ...(content ? { content } : {}),
    certificates,
    signerInfos: sis.map(readSignerInfo),
  };
}

/** The DER that a SignerInfo's signature covers: its signed attributes with the SET OF tag (RFC 5652 5.4). */
export function signedAttrsForSignature(si: SignerInfo): Uint8Array | undefined {
  if (!si.signedAttrsNode) return undefined;
  const b = new Uint8Array(si.signedAttrsNode.der);
  b[0] = TAG.SET;
  return b;
}
