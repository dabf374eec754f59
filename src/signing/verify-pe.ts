/**
 * Authenticode verification of a PE (the checks `osslsigncode verify` makes): the image digest, the
 * PKCS#7 signer's messageDigest and RSA signature, the certificate chain to given CAs, and an RFC 3161
 * timestamp token (imprint, TSA signature, TSA chain). Malformed signatures are reported as problems,
 * never thrown; input that is not a PE throws FormatError.
 */
import { createHash, verify as cryptoVerify, X509Certificate } from 'node:crypto';
import { FormatError } from '../errors.js';
import { bytesEqual, children, decodeAt, readOid, TAG, type DerNode } from '../formats/asn1/der.js';
import { digestNameFromOid, OID, RSA_SIGNATURE_OIDS, type DigestName } from '../formats/asn1/oids.js';
import { parseSignedData, signedAttrsForSignature, type SignerInfo } from '../formats/asn1/pkcs7.js';
import { certificateParts } from '../formats/asn1/x509.js';
import { authenticodeDigest, findSignedData, parsePe, readCertificateTable } from '../formats/pe/index.js';
import { readTimestampToken } from './timestamp.js';
import type { PeVerifyResult } from './types.js';

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
  /** Trust anchors for the signer chain (DER). Without them `chainValid` stays undefined. */
  caCertsDer?: Uint8Array[];
  /** Trust anchors for the timestamp authority (DER). Without them the TSA chain is not checked. */
  tsaCaCertsDer?: Uint8Array[];
}

/** Whether a result is a fully valid signature (and chain/timestamp, when those were checked). */
export function peVerifyOk(r: PeVerifyResult): boolean {
  return (
    r.signed && r.digestMatches && r.signatureValid && r.chainValid !== false && r.timestamp?.valid !== false
  );
}

function toX509(der: Uint8Array): X509Certificate | undefined {
  try {
    return new X509Certificate(der);
  } catch {
    return undefined;
  }
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

export function verifyPe(
  bytes: Uint8Array,
  options: { caCertsDer?: Uint8Array[]; tsaCaCertsDer?: Uint8Array[] } = {},
): PeVerifyResult {
  const result: PeVerifyResult = { signed: false, digestMatches: false, signatureValid: false, problems: [] };
  let info;
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
  const anchors = (options.caCertsDer ?? []).map(toX509).filter((c): c is X509Certificate => !!c);
  const tsaAnchors = (options.tsaCaCertsDer ?? []).map(toX509).filter((c): c is X509Certificate => !!c);
  try {
    const entries = readCertificateTable(bytes, info);
    const entry = findSignedData(entries);
    if (!entry)
      throw new FormatError('pe', 'PE_BAD_CERT_TABLE', 'no PKCS#7 SignedData entry in the certificate table');
    // More than one WIN_CERTIFICATE (UEFI multi-signer style, e.g. some shim builds): osslsigncode 2.9
    // rejects the file ("Unable to extract existing signature") and so do we; signPe replaces the
    // whole table with a single entry.
    const multiple = entries.length > 1;
    // bCertificate is zero-padded to 8: the DER element's own length decides where it ends.
    const sd = parseSignedData(decodeAt(entry.data, 0).der);
    if (sd.contentType !== OID.spcIndirectData || !sd.content || sd.content.tag !== TAG.SEQUENCE)
      throw new FormatError(
        'pkcs7',
        'PKCS7_MALFORMED',
        `signed content type ${sd.contentType} is not SpcIndirectDataContent`,
      );

    // SpcIndirectDataContent: { SpcAttributeTypeAndOptionalValue, DigestInfo { AlgorithmIdentifier, OCTET STRING } }
    const [spcData, digestInfo] = children(sd.content);
    const [algId, digestNode] = children(digestInfo!);
    const alg = readOid(children(algId!)[0]!);
    const hash = digestNameFromOid(alg);
    if (spcData?.tag !== TAG.SEQUENCE || readOid(children(spcData)[0]!) !== OID.spcPeImageData)
      result.problems.push('SpcIndirectDataContent does not describe a PE image');
    if (hash === 'sha1' || hash === 'sha256') {
      result.digestAlgorithm = hash;
      const actual = authenticodeDigest(bytes, info, hash);
      result.digestMatches = digestNode?.tag === TAG.OCTET_STRING && bytesEqual(digestNode.value, actual);
      if (!result.digestMatches)
        result.problems.push(
          `image digest ${actual.toString('hex')} differs from the signed one ${Buffer.from(digestNode?.value ?? []).toString('hex')}`,
        );
    } else result.problems.push(`unsupported image digest algorithm ${alg}`);

    const si = sd.signerInfos[0];
    if (!si) throw new FormatError('pkcs7', 'PKCS7_MALFORMED', 'no SignerInfo');
    const signer = checkSignerInfo(si, sd.certificates, sd.content.value, OID.spcIndirectData, 'signature');
    // OpenSSL's PKCS7_dataInit sets up one digest per listed algorithm: the signer's must be listed.
    if (!sd.digestAlgorithms.includes(si.digestAlgorithm)) {
      signer.valid = false;
      signer.problems.push(`digestAlgorithms does not list the signer's digest ${si.digestAlgorithm}`);
    }
    result.signatureValid = signer.valid && !multiple;
    if (multiple)
      result.problems.push(`certificate table has ${entries.length} entries; a single one is required`);
    result.problems.push(...signer.problems);
    if (signer.cert)
      result.signer = {
        subject: oneLine(signer.cert.subject),
        issuer: oneLine(signer.cert.issuer),
        serial: signer.cert.serialNumber,
      };

    // Timestamp: RFC 3161 token in 1.3.6.1.4.1.311.3.3.1 (authenticode.md §7).
    let at = new Date();
    const tsAttr = si.unsignedAttrs.find((a) => a.oid === OID.spcRfc3161Timestamp);
    const legacy = si.unsignedAttrs.find((a) => a.oid === OID.counterSignature);
    result.timestamp = { present: !!(tsAttr || legacy) };
    if (tsAttr) {
      const ts = checkTimestamp(tsAttr.values[0]?.der, si.signature, tsaAnchors);
      result.timestamp = {
        present: true,
        valid: ts.problems.length === 0,
        ...(ts.time ? { time: ts.time.toISOString() } : {}),
      };
      result.problems.push(...ts.problems);
      if (result.timestamp.valid && ts.time) at = ts.time;
    } else if (legacy) result.problems.push('legacy Authenticode counter-signature timestamp is not checked');

    if (anchors.length > 0 && signer.cert) {
      const pool = sd.certificates.map((c) => toX509(c.der)).filter((c): c is X509Certificate => !!c);
      const chain = checkChain(signer.cert, pool, anchors, at, OID.ekuCodeSigning, 'signer');
      result.chainValid = chain.length === 0;
      result.problems.push(...chain);
    } else if (anchors.length > 0) result.chainValid = false;
  } catch (e) {
    // Hostile DER can fail anywhere in the schema walk (a missing element is a TypeError there).
    result.signatureValid = false;
    const code = e instanceof FormatError ? `${e.code}: ` : '';
    result.problems.push(`malformed signature: ${code}${(e as Error).message}`);
    if (options.caCertsDer?.length) result.chainValid = false;
  }
  return result;
}

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
