/**
 * Authenticode verification of a PE (the checks `osslsigncode verify` makes), for every signature in
 * the file: the image digest, the PKCS#7 signer's messageDigest and RSA signature, the certificate
 * chain to given CAs, and an RFC 3161 timestamp token (imprint, TSA signature, TSA chain). Each check
 * ends `ok`, `invalid` or `not checked` with its reason (src/signing/check.ts). Malformed signatures
 * are reported as invalid, never thrown; input that is not a PE throws FormatError.
 */
import { createHash, verify as cryptoVerify, X509Certificate } from 'node:crypto';
import { ConfigError, FormatError } from '../errors.js';
import { signingError, signingFormatError } from './errors.js';
import { bytesEqual, children, decodeAt, readOid, TAG, type DerNode } from '../formats/asn1/der.js';
import { digestNameFromOid, OID, RSA_SIGNATURE_OIDS, type DigestName } from '../formats/asn1/oids.js';
import {
  parseSignedData,
  signedAttrsForSignature,
  type SignedData,
  type SignerInfo,
} from '../formats/asn1/pkcs7.js';
import { certificateParts } from '../formats/asn1/x509.js';
import {
  authenticodeDigest,
  parsePe,
  readCertificateTable,
  WIN_CERT_REVISION_2_0,
  WIN_CERT_TYPE_PKCS_SIGNED_DATA,
  type CertificateEntry,
  type PeInfo,
} from '../formats/pe/index.js';
import { worstStatus, type Check } from './check.js';
import { readTimestampToken } from './timestamp.js';
import type { PeSignatureResult, PeVerifyResult } from './types.js';

/**
 * SpcIndirectDataContent data types taken as "a PE image": SpcPeImageData (1.3.6.1.4.1.311.2.1.15), and
 * 1.3.6.1.4.1.311.2.1.21, which Debian's Secure Boot signer writes (the corpus' efi-signed/fwupdx64.efi);
 * osslsigncode and sbverify check such a signature's image digest all the same.
 */
const PE_IMAGE_DATA_TYPES = new Set([OID.spcPeImageData, '1.3.6.1.4.1.311.2.1.21']);

/** Longest issuer chain followed from a signer to a trust anchor. */
export const MAX_CHAIN_DEPTH = 8;
const ECDSA_SIGNATURE_OIDS = new Set([
  '1.2.840.10045.2.1',
  '1.2.840.10045.4.1',
  '1.2.840.10045.4.3.2',
  '1.2.840.10045.4.3.3',
  '1.2.840.10045.4.3.4',
]);
const ANY_EKU = '2.5.29.37.0';

export interface VerifyPeOptions {
  /** Trust anchors for the signer chain (DER). Without them the chain is `not checked`. */
  caCertsDer?: Uint8Array[];
  /** Trust anchors for the timestamp authority (DER). Without them a timestamp is `not checked`. */
  tsaCaCertsDer?: Uint8Array[];
}

/**
 * The verdict: signed, and no check of any signature invalid. Checks left `not checked` (no CA, no
 * TSA CA) do not fail it; they are listed in `notChecked`.
 */
export function peVerifyOk(r: PeVerifyResult): boolean {
  return r.signed && r.signatures.length > 0 && r.status !== 'invalid';
}

function toX509(der: Uint8Array): X509Certificate | undefined {
  try {
    return new X509Certificate(der);
  } catch {
    return undefined;
  }
}

/** Given anchors must all parse: one dropped silently would turn "checked" into "not checked". */
function trustAnchors(ders: Uint8Array[] | undefined, what: string): X509Certificate[] {
  return (ders ?? []).map((der, i) => {
    const c = toX509(der);
    if (!c)
      throw signingError(ConfigError, 'CERT_INVALID', `${what} certificate ${i} does not parse as X.509`);
    return c;
  });
}

const oneLine = (name: string): string => name.split('\n').join(', ');

interface SignerCheck {
  cert?: X509Certificate;
  valid: boolean;
  problems: string[];
}

/**
 * Check one SignerInfo over `content` (the octets its messageDigest covers), with the signature over
 * its signed attributes as received (RFC 2315 9.3 / RFC 5652 5.4).
 */
function checkSignerInfo(
  si: SignerInfo,
  certs: DerNode[],
  content: Uint8Array,
  contentType: string,
  what: string,
): SignerCheck {
  const problems: string[] = [];
  const hash = digestNameFromOid(si.digestAlgorithm);
  if (!hash)
    return { valid: false, problems: [`${what}: unsupported digest algorithm ${si.digestAlgorithm}`] };
  const attrs = signedAttrsForSignature(si);
  // issuerAndSerialNumber names the certificate; a subjectKeyIdentifier sid (CMS v3) is matched by
  // trying the embedded certificates' keys.
  const candidates = certs
    .map((c) => c.der)
    .filter((der) => {
      if (!si.issuerDer || !si.serialDer) return true;
      try {
        const p = certificateParts(der);
        return bytesEqual(p.issuerDer, si.issuerDer) && bytesEqual(p.serialDer, si.serialDer);
      } catch {
        return false;
      }
    });
  const x509s = candidates.map(toX509).filter((c): c is X509Certificate => !!c);
  const cert = si.issuerDer
    ? x509s[0]
    : x509s.find((c) => attrs !== undefined && verifySig(hash, attrs, c, si));
  if (!cert) return { valid: false, problems: [`${what}: signer certificate not found in the signature`] };

  if (!attrs) return { cert, valid: false, problems: [`${what}: no signed attributes`] };
  const ct = si.signedAttrs.find((a) => a.oid === OID.contentType);
  const ctValue = ct?.values[0];
  if (!ctValue || ctValue.tag !== TAG.OID || readOid(ctValue) !== contentType)
    problems.push(`${what}: contentType attribute is not ${contentType}`);
  const md = si.signedAttrs.find((a) => a.oid === OID.messageDigest)?.values[0];
  const expected = createHash(hash).update(content).digest();
  if (!md || md.tag !== TAG.OCTET_STRING || !bytesEqual(md.value, expected))
    problems.push(`${what}: messageDigest attribute does not match the signed content`);
  if (!verifySig(hash, attrs, cert, si))
    problems.push(`${what}: signature does not verify with the signer certificate`);
  return { cert, valid: problems.length === 0, problems };
}

function verifySig(hash: DigestName, data: Uint8Array, cert: X509Certificate, si: SignerInfo): boolean {
  const alg = si.signatureAlgorithm;
  if (!(alg in RSA_SIGNATURE_OIDS) && !ECDSA_SIGNATURE_OIDS.has(alg)) return false;
  try {
    return cryptoVerify(hash, data, cert.publicKey, si.signature);
  } catch {
    return false;
  }
}

function validAt(c: X509Certificate, at: Date): boolean {
  return new Date(c.validFrom) <= at && at <= new Date(c.validTo);
}

/** Build a chain from `leaf` through `pool` to one of `anchors`, checking signatures, CA flags, validity and EKU. */
function checkChain(
  leaf: X509Certificate,
  pool: X509Certificate[],
  anchors: X509Certificate[],
  at: Date,
  eku: string,
  what: string,
): string[] {
  const problems: string[] = [];
  const usages = leaf.keyUsage;
  if (usages && usages.length > 0 && !usages.includes(eku) && !usages.includes(ANY_EKU))
    problems.push(`${what}: certificate extended key usage ${usages.join(', ')} lacks ${eku}`);
  let cur = leaf;
  for (let depth = 0; depth <= MAX_CHAIN_DEPTH; depth++) {
    if (!validAt(cur, at))
      problems.push(`${what}: certificate ${oneLine(cur.subject)} is not valid at ${at.toISOString()}`);
    if (anchors.some((a) => a.raw.equals(cur.raw))) return problems;
    const issuedBy = (c: X509Certificate): boolean => {
      try {
        return c.ca && cur.checkIssued(c) && cur.verify(c.publicKey);
      } catch {
        return false;
      }
    };
    const anchor = anchors.find(issuedBy);
    if (anchor) {
      if (!validAt(anchor, at))
        problems.push(`${what}: CA ${oneLine(anchor.subject)} is not valid at ${at.toISOString()}`);
      return problems;
    }
    const next = pool.find((c) => !c.raw.equals(cur.raw) && issuedBy(c));
    if (!next) break;
    cur = next;
  }
  problems.push(`${what}: no chain from ${oneLine(leaf.subject)} to a trusted CA`);
  return problems;
}

/** Most signatures nested in one entry's signer (1.3.6.1.4.1.311.2.4.1 values) that are verified. */
export const MAX_NESTED_SIGNATURES = 16;

const NO_CA = 'no CA given (--ca)';
const NO_TSA_CA = 'no TSA CA given (--tsa-ca)';

interface Context {
  bytes: Uint8Array;
  info: PeInfo;
  anchors: X509Certificate[];
  tsaAnchors: X509Certificate[];
  /** Image digests by algorithm, computed once per file. */
  digests: Map<DigestName, Buffer>;
}

interface Position {
  index: number;
  entry: number;
  nested: boolean;
}

const failed = (reason: string): Check => ({ status: 'invalid', reason });
const OK: Check = { status: 'ok' };

function finish(pos: Position, r: Omit<PeSignatureResult, keyof Position | 'status'>): PeSignatureResult {
  const statuses = Object.values(r.checks).map((c: Check) => c.status);
  return { ...pos, status: worstStatus(statuses), ...r };
}

/** A signature that could not be read at all: every check that needs it fails. */
function malformed(pos: Position, ctx: Context, e: unknown): PeSignatureResult {
  // Hostile DER can fail anywhere in the schema walk (a missing element is a TypeError there).
  const code = e instanceof FormatError ? `${e.code}: ` : '';
  const reason = `malformed signature: ${code}${(e as Error).message}`;
  return finish(pos, {
    checks: {
      digest: failed(reason),
      signature: failed(reason),
      chain: ctx.anchors.length > 0 ? failed(reason) : { status: 'not checked', reason: NO_CA },
    },
    problems: [reason],
  });
}

/** Verify one Authenticode SignedData (an entry's own or a nested one) against the image. */
function verifySignedData(sd: SignedData, pos: Position, ctx: Context): PeSignatureResult {
  if (sd.contentType !== OID.spcIndirectData || !sd.content || sd.content.tag !== TAG.SEQUENCE)
    throw signingFormatError(
      'pkcs7',
      'PKCS7_MALFORMED',
      `signed content type ${sd.contentType} is not SpcIndirectDataContent`,
    );
  const problems: string[] = [];
  const out: Pick<PeSignatureResult, 'digestAlgorithm' | 'signer'> = {};

  // SpcIndirectDataContent: { SpcAttributeTypeAndOptionalValue, DigestInfo { AlgorithmIdentifier, OCTET STRING } }
  const [spcData, digestInfo] = children(sd.content);
  const [algId, digestNode] = children(digestInfo!);
  const alg = readOid(children(algId!)[0]!);
  const hash = digestNameFromOid(alg);
  let digest: Check;
  if (spcData?.tag !== TAG.SEQUENCE || !PE_IMAGE_DATA_TYPES.has(readOid(children(spcData)[0]!)))
    digest = failed('SpcIndirectDataContent does not describe a PE image');
  else if (hash === 'sha1' || hash === 'sha256') {
    out.digestAlgorithm = hash;
    let actual = ctx.digests.get(hash);
    if (!actual) ctx.digests.set(hash, (actual = authenticodeDigest(ctx.bytes, ctx.info, hash)));
    digest =
      digestNode?.tag === TAG.OCTET_STRING && bytesEqual(digestNode.value, actual)
        ? OK
        : failed(
            `image digest ${actual.toString('hex')} differs from the signed one ${Buffer.from(digestNode?.value ?? []).toString('hex')}`,
          );
  } else digest = failed(`unsupported image digest algorithm ${alg}`);
  if (digest.reason) problems.push(digest.reason);

  // Authenticode: exactly one SignerInfo (authenticode.md §3); another would go unchecked.
  if (sd.signerInfos.length !== 1)
    throw signingFormatError(
      'pkcs7',
      'PKCS7_MALFORMED',
      `${sd.signerInfos.length} SignerInfos, Authenticode has one`,
    );
  const si = sd.signerInfos[0]!;
  const signer = checkSignerInfo(si, sd.certificates, sd.content.value, OID.spcIndirectData, 'signature');
  // OpenSSL's PKCS7_dataInit sets up one digest per listed algorithm: the signer's must be listed.
  if (!sd.digestAlgorithms.includes(si.digestAlgorithm)) {
    signer.valid = false;
    signer.problems.push(`digestAlgorithms does not list the signer's digest ${si.digestAlgorithm}`);
  }
  problems.push(...signer.problems);
  const signature = signer.valid ? OK : failed(signer.problems.join('; '));
  if (signer.cert)
    out.signer = {
      subject: oneLine(signer.cert.subject),
      issuer: oneLine(signer.cert.issuer),
      serial: signer.cert.serialNumber,
    };

  // Timestamp: RFC 3161 token in 1.3.6.1.4.1.311.3.3.1 (authenticode.md §7). Only a fully verified
  // one (TSA chain included) moves the time the signer chain is judged at.
  let at = new Date();
  let timestamp: PeSignatureResult['checks']['timestamp'];
  const tsAttr = si.unsignedAttrs.find((a) => a.oid === OID.spcRfc3161Timestamp);
  const legacy = si.unsignedAttrs.find((a) => a.oid === OID.counterSignature);
  if (tsAttr) {
    const ts = checkTimestamp(tsAttr.values[0]?.der, si.signature, ctx.tsaAnchors);
    const time = ts.time ? { time: ts.time.toISOString() } : {};
    problems.push(...ts.problems);
    if (ts.problems.length > 0) timestamp = { ...failed(ts.problems.join('; ')), ...time };
    else if (ctx.tsaAnchors.length === 0)
      timestamp = {
        status: 'not checked',
        reason: `${NO_TSA_CA}: imprint and TSA signature verify, the TSA is not known`,
        ...time,
      };
    else {
      timestamp = { ...OK, ...time };
      if (ts.time) at = ts.time;
    }
  } else if (legacy)
    timestamp = {
      status: 'not checked',
      reason: 'legacy Authenticode counter-signature timestamps are not checked',
    };

  let chain: Check;
  if (ctx.anchors.length === 0) chain = { status: 'not checked', reason: NO_CA };
  else if (!signer.cert) chain = failed('no signer certificate to build a chain from');
  else {
    const pool = sd.certificates.map((c) => toX509(c.der)).filter((c): c is X509Certificate => !!c);
    const issues = checkChain(signer.cert, pool, ctx.anchors, at, OID.ekuCodeSigning, 'signer');
    if (issues.length > 0 && tsAttr && timestamp?.status !== 'ok')
      issues.push(
        `signer: chain judged at ${at.toISOString()}: the timestamp time is used only when the timestamp verifies with a TSA CA`,
      );
    chain = issues.length === 0 ? OK : failed(issues.join('; '));
    problems.push(...issues);
  }
  return finish(pos, {
    ...out,
    checks: { digest, signature, chain, ...(timestamp ? { timestamp } : {}) },
    problems,
  });
}

/**
 * Verify every Authenticode signature of a PE: each WIN_CERTIFICATE entry (UEFI binaries such as
 * shim carry one per signer, as sbverify lists them) and the signatures nested in each entry's
 * signer (1.3.6.1.4.1.311.2.4.1, as osslsigncode lists them). Nested signatures inside nested
 * signatures are not followed (Windows and osslsigncode read one level); one that carries them says so.
 */
export function verifyPe(bytes: Uint8Array, options: VerifyPeOptions = {}): PeVerifyResult {
  const result: PeVerifyResult = {
    signed: false,
    status: 'invalid',
    signatures: [],
    notChecked: [],
    digestMatches: false,
    signatureValid: false,
    problems: [],
  };
  let info: PeInfo;
  try {
    info = parsePe(bytes);
  } catch (e) {
    // A table that is not last, or that does not fit, is ignored by osslsigncode (MS12-024): unsigned.
    if (
      e instanceof FormatError &&
      (e.code === 'PE_CERT_TABLE_NOT_AT_EOF' || e.code === 'PE_BAD_CERT_TABLE')
    ) {
      result.problems.push(`${e.code}: ${e.message}`);
      return result;
    }
    throw e;
  }
  if (!info.certTable) {
    result.problems.push('not signed');
    return result;
  }
  result.signed = true;
  const ctx: Context = {
    bytes,
    info,
    anchors: trustAnchors(options.caCertsDer, 'CA'),
    tsaAnchors: trustAnchors(options.tsaCaCertsDer, 'TSA CA'),
    digests: new Map(),
  };
  let entries: CertificateEntry[];
  try {
    entries = readCertificateTable(bytes, info);
  } catch (e) {
    const code = e instanceof FormatError ? `${e.code}: ` : '';
    result.problems.push(`malformed certificate table: ${code}${(e as Error).message}`);
    if (ctx.anchors.length > 0) result.chainValid = false;
    return result;
  }
  const sigs = result.signatures;
  for (const [entry, cert] of entries.entries()) {
    const pos = (nested: boolean): Position => ({ index: sigs.length, entry, nested });
    if (cert.revision !== WIN_CERT_REVISION_2_0 || cert.certificateType !== WIN_CERT_TYPE_PKCS_SIGNED_DATA) {
      const what = `WIN_CERTIFICATE revision 0x${cert.revision.toString(16)} type 0x${cert.certificateType.toString(16)} is not PKCS#7 SignedData`;
      sigs.push(malformed(pos(false), ctx, signingFormatError('pe', 'PE_BAD_CERT_TABLE', what, cert.offset)));
      continue;
    }
    let sd: SignedData;
    try {
      // bCertificate is zero-padded to 8: the DER element's own length decides where it ends.
      sd = parseSignedData(decodeAt(cert.data, 0).der);
      sigs.push(verifySignedData(sd, pos(false), ctx));
    } catch (e) {
      sigs.push(malformed(pos(false), ctx, e));
      continue;
    }
    const nestedValues = (sd.signerInfos[0]?.unsignedAttrs ?? [])
      .filter((a) => a.oid === OID.spcNestedSignature)
      .flatMap((a) => a.values);
    if (nestedValues.length > MAX_NESTED_SIGNATURES) {
      const e = signingFormatError(
        'pkcs7',
        'PKCS7_MALFORMED',
        `${nestedValues.length} nested signatures (max ${MAX_NESTED_SIGNATURES})`,
      );
      sigs.push(malformed(pos(true), ctx, e));
      continue;
    }
    for (const v of nestedValues) {
      const p = pos(true);
      try {
        const nsd = parseSignedData(v.der);
        let r = verifySignedData(nsd, p, ctx);
        if (nsd.signerInfos[0]?.unsignedAttrs.some((a) => a.oid === OID.spcNestedSignature)) {
          const reason = 'signatures nested inside a nested signature are not followed';
          r = finish(p, {
            ...r,
            checks: { ...r.checks, nestedSignatures: { status: 'not checked', reason } },
          });
        }
        sigs.push(r);
      } catch (e) {
        sigs.push(malformed(p, ctx, e));
      }
    }
  }
  summarise(result, ctx);
  return result;
}

/** The aggregate and the older per-file fields, from the per-signature results. */
function summarise(result: PeVerifyResult, ctx: Context): void {
  const sigs = result.signatures;
  const every = (k: 'digest' | 'signature' | 'chain'): boolean =>
    sigs.length > 0 && sigs.every((s) => s.checks[k].status === 'ok');
  result.status = sigs.length === 0 ? 'invalid' : worstStatus(sigs.map((s) => s.status));
  result.digestMatches = every('digest');
  result.signatureValid = every('signature');
  if (ctx.anchors.length > 0) result.chainValid = every('chain');
  const many = sigs.length > 1;
  const label = (s: PeSignatureResult): string =>
    many ? `signature ${s.index}${s.nested ? ' (nested)' : ''} ` : '';
  for (const s of sigs) {
    result.problems.push(...s.problems.map((p) => (many ? `signature ${s.index}: ${p}` : p)));
    for (const [name, c] of Object.entries(s.checks))
      if (c.status === 'not checked')
        result.notChecked.push(`${label(s)}${CHECK_LABEL[name] ?? name}: ${c.reason}`);
  }
  const primary = sigs[0];
  if (!primary) return;
  if (primary.digestAlgorithm) result.digestAlgorithm = primary.digestAlgorithm;
  if (primary.signer) result.signer = primary.signer;
  const ts = primary.checks.timestamp;
  result.timestamp = { present: !!ts };
  if (ts?.status === 'ok') result.timestamp.valid = true;
  if (ts?.status === 'invalid') result.timestamp.valid = false;
  if (ts?.time) result.timestamp.time = ts.time;
}

const CHECK_LABEL: Record<string, string> = {
  chain: 'signer chain',
  timestamp: 'timestamp',
  nestedSignatures: 'nested signatures',
};

function checkTimestamp(
  token: Uint8Array | undefined,
  signature: Uint8Array,
  anchors: X509Certificate[],
): { time?: Date; problems: string[] } {
  if (!token) return { problems: ['timestamp attribute has no value'] };
  try {
    const t = readTimestampToken(token);
    const problems: string[] = [];
    const hash = digestNameFromOid(t.tstInfo.hashAlgorithm);
    if (!hash) problems.push(`timestamp: unsupported imprint algorithm ${t.tstInfo.hashAlgorithm}`);
    else if (!bytesEqual(createHash(hash).update(signature).digest(), t.tstInfo.imprint))
      problems.push('timestamp: imprint does not match the signature');
    const si = t.signedData.signerInfos[0];
    if (!si) return { problems: [...problems, 'timestamp: no SignerInfo'] };
    const check = checkSignerInfo(si, t.signedData.certificates, t.tstInfoDer, OID.tstInfo, 'timestamp');
    problems.push(...check.problems);
    if (check.cert && anchors.length > 0) {
      const pool = t.signedData.certificates
        .map((c) => toX509(c.der))
        .filter((c): c is X509Certificate => !!c);
      problems.push(
        ...checkChain(check.cert, pool, anchors, t.tstInfo.genTime, OID.ekuTimeStamping, 'timestamp'),
      );
    }
    return { time: t.tstInfo.genTime, problems };
  } catch (e) {
    const code = e instanceof FormatError ? `${e.code}: ` : '';
    return { problems: [`timestamp: malformed token: ${code}${(e as Error).message}`] };
  }
}
