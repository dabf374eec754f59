/** The few X.509 (RFC 5280 4.1) fields the signers copy verbatim from a certificate's DER. */
import { FormatError } from '../../errors.js';
import { children, ctxTag, decode, expectTag, TAG, type DerNode } from './der.js';

export type X509ErrorCode = 'X509_BAD_CERTIFICATE';

export interface CertificateParts {
  /** The issuer Name, whole TLV, as in the certificate. */
  issuerDer: Uint8Array;
  /** The serialNumber INTEGER, whole TLV, as in the certificate. */
  serialDer: Uint8Array;
  subjectDer: Uint8Array;
  /** SubjectPublicKeyInfo, whole TLV. */
  spkiDer: Uint8Array;
}

export function certificateParts(der: Uint8Array): CertificateParts {
  const cert = expectTag(
    decode(der),
    TAG.SEQUENCE,
    'Certificate',
    'X509_BAD_CERTIFICATE' satisfies X509ErrorCode,
  );
  const tbs = expectTag(
    children(cert)[0],
    TAG.SEQUENCE,
    'TBSCertificate',
    'X509_BAD_CERTIFICATE' satisfies X509ErrorCode,
  );
  const f = children(tbs);
  let i = 0;
  if (f[0]?.tag === ctxTag(0)) i = 1; // [0] EXPLICIT version
  const pick = (n: DerNode | undefined, tag: number, what: string): Uint8Array =>
    expectTag(n, tag, what, 'X509_BAD_CERTIFICATE' satisfies X509ErrorCode).der;
  const serialDer = pick(f[i], TAG.INTEGER, 'serialNumber');
  const issuerDer = pick(f[i + 2], TAG.SEQUENCE, 'issuer');
  const subjectDer = pick(f[i + 4], TAG.SEQUENCE, 'subject');
  const spkiDer = pick(f[i + 5], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  if (serialDer.length < 3)
    throw new FormatError('asn1', 'X509_BAD_CERTIFICATE' satisfies X509ErrorCode, 'empty serialNumber', 0);
  return { issuerDer, serialDer, subjectDer, spkiDer };
}
