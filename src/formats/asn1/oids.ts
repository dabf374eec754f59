/** Object identifiers used by Authenticode (../shared/docs/authenticode.md §3, §4, §7) and RFC 3161. */
export const OID = {
  signedData: '1.2.840.113549.1.7.2',
  data: '1.2.840.113549.1.7.1',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  counterSignature: '1.2.840.113549.1.9.6',
  rsaEncryption: '1.2.840.113549.1.1.1',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
  spcIndirectData: '1.3.6.1.4.1.311.2.1.4',
  spcStatementType: '1.3.6.1.4.1.311.2.1.11',
  spcSpOpusInfo: '1.3.6.1.4.1.311.2.1.12',
  spcPeImageData: '1.3.6.1.4.1.311.2.1.15',
  spcIndividualSpKeyPurpose: '1.3.6.1.4.1.311.2.1.21',
  spcNestedSignature: '1.3.6.1.4.1.311.2.4.1',
  spcRfc3161Timestamp: '1.3.6.1.4.1.311.3.3.1',
  tstInfo: '1.2.840.113549.1.9.16.1.4',
  ekuCodeSigning: '1.3.6.1.5.5.7.3.3',
  ekuTimeStamping: '1.3.6.1.5.5.7.3.8',
} as const;

export type DigestName = 'sha1' | 'sha256' | 'sha384' | 'sha512';

export const DIGEST_OIDS: Record<DigestName, string> = {
  sha1: OID.sha1,
  sha256: OID.sha256,
  sha384: OID.sha384,
  sha512: OID.sha512,
};

export function digestNameFromOid(oid: string): DigestName | undefined {
  for (const [name, o] of Object.entries(DIGEST_OIDS)) if (o === oid) return name as DigestName;
  return undefined;
}

/** RSA signature algorithm OIDs (PKCS#1) and the digest each implies; rsaEncryption implies none. */
export const RSA_SIGNATURE_OIDS: Record<string, DigestName | null> = {
  [OID.rsaEncryption]: null,
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
