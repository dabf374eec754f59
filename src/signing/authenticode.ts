/**
 * Authenticode signing of PE files (../shared/docs/authenticode.md): PKCS#7 v1.5 SignedData over an
 * SpcIndirectDataContent holding the image digest, built as DER by hand (forge's pkcs7 signer drops
 * custom signed attributes) and signed through the SigningKey interface, so the private key never
 * leaves its backend. An existing signature is replaced.
 */
import { createHash, verify as cryptoVerify } from 'node:crypto';
import { ConfigError, VerificationError } from '../errors.js';
import { signingError } from './errors.js';
import {
  algorithmId,
  ascii,
  bytesEqual,
  compareBytes,
  ctxTag,
  explicit,
  integer,
  octetString,
  oid,
  seq,
  setOf,
  TAG,
  time,
  tlv,
  utf16be,
} from '../formats/asn1/der.js';
import { DIGEST_OIDS, OID } from '../formats/asn1/oids.js';
import { certificateParts } from '../formats/asn1/x509.js';
import { authenticodeDigest, isPe as sniffPe, parsePe, writeCertificateTable } from '../formats/pe/index.js';
import type { PeInfo } from '../formats/pe/index.js';
import { embedTimestampToken, fetchTimestamp } from './timestamp.js';
import type { AuthenticodeOptions } from './types.js';

/** Longest programName / programUrl accepted (they are stored in every signature). */
export const MAX_PROGRAM_NAME = 1024;
export const MAX_PROGRAM_URL = 2048;

/** Cheap sniff (`MZ`, e_lfanew, `PE\0\0`); never throws. */
export function isPe(bytes: Uint8Array): boolean {
  return sniffPe(bytes);
}

/** SpcPeImageData.file: `[0] { [2] { [0] BMPString "<<<Obsolete>>>" } }`, as signtool/osslsigncode write it. */
const OBSOLETE_LINK = explicit(0, explicit(2, tlv(ctxTag(0, false), utf16be('<<<Obsolete>>>'))));

/** SpcIndirectDataContent (authenticode.md §3) for an image digest. */
export function spcIndirectDataContent(imageDigest: Uint8Array, hash: 'sha256' | 'sha1'): Uint8Array {
  const flags = Uint8Array.of(TAG.BIT_STRING, 1, 0); // SpcPeImageFlags: empty, like signtool/winsign
  return seq(
    seq(oid(OID.spcPeImageData), seq(flags, OBSOLETE_LINK)),
    seq(algorithmId(DIGEST_OIDS[hash]), octetString(imageDigest)),
  );
}

function attribute(type: string, ...values: Uint8Array[]): Uint8Array {
  return seq(oid(type), setOf(...values));
}

function validate(options: AuthenticodeOptions): void {
  if (options.digest !== 'sha256' && options.digest !== 'sha1')
    throw signingError(
      ConfigError,
      'AUTHENTICODE_BAD_OPTION',
      `options.digest must be 'sha256' or 'sha1', got ${String(options.digest)}`,
    );
  if (!options.key || typeof options.key.signDigest !== 'function')
    throw signingError(ConfigError, 'AUTHENTICODE_BAD_OPTION', 'options.key must be a SigningKey');
  if (!Array.isArray(options.certChainDer) || options.certChainDer.length === 0)
    throw signingError(
      ConfigError,
      'AUTHENTICODE_BAD_OPTION',
      'options.certChainDer must hold at least the signer certificate',
    );
  if (options.programName !== undefined && options.programName.length > MAX_PROGRAM_NAME)
    throw signingError(
      ConfigError,
      'AUTHENTICODE_BAD_OPTION',
      `options.programName is ${options.programName.length} characters (max ${MAX_PROGRAM_NAME})`,
    );
  if (options.programUrl !== undefined) {
    if (options.programUrl.length > MAX_PROGRAM_URL || !/^[\x20-\x7e]*$/.test(options.programUrl))
      throw signingError(
        ConfigError,
        'AUTHENTICODE_BAD_OPTION',
        `options.programUrl must be printable ASCII up to ${MAX_PROGRAM_URL} characters`,
      );
  }
}

export interface AuthenticodeSignature {
  /** DER ContentInfo (SignedData), what goes into the WIN_CERTIFICATE. */
  der: Uint8Array;
  /** The SignerInfo's encryptedDigest (the RSA signature), what an RFC 3161 imprint covers. */
  signature: Uint8Array;
}

/**
 * Build and sign the SignedData for an image digest (authenticode.md §4). `now` is used only when
 * `options.signingTime` is set.
 */
export async function buildAuthenticodeSignature(
  imageDigest: Uint8Array,
  options: AuthenticodeOptions,
  now: Date = new Date(),
): Promise<AuthenticodeSignature> {
  validate(options);
  const hash = options.digest;
  const signerCert = options.certChainDer[0]!;
  let parts;
  try {
    parts = certificateParts(signerCert);
  } catch (e) {
    throw signingError(
      ConfigError,
      'AUTHENTICODE_BAD_CERTIFICATE',
      `signer certificate is not a DER X.509 certificate: ${(e as Error).message}`,
      { cause: e },
    );
  }
  if (!bytesEqual(parts.spkiDer, options.key.publicKeyDer))
    throw signingError(
      ConfigError,
      'KEY_CERT_MISMATCH',
      `key ${options.key.id} does not match the signer certificate's public key`,
    );

  const spc = spcIndirectDataContent(imageDigest, hash);
  // messageDigest covers the content octets of SpcIndirectDataContent, without its tag and length
  // (RFC 2315 9.3; osslsigncode sign_spc_indirect_data_content; authenticode.md §4).
  const spcHeader = spc[1]! < 0x80 ? 2 : 2 + (spc[1]! & 0x7f);
  const contentDigest = createHash(hash).update(spc.subarray(spcHeader)).digest();

  const opus: Uint8Array[] = [];
  if (options.programName !== undefined)
    opus.push(explicit(0, tlv(ctxTag(0, false), utf16be(options.programName))));
  if (options.programUrl !== undefined)
    opus.push(explicit(1, tlv(ctxTag(0, false), ascii(options.programUrl))));
  const attrs = [
    attribute(OID.contentType, oid(OID.spcIndirectData)),
    attribute(OID.spcSpOpusInfo, seq(...opus)),
    attribute(OID.spcStatementType, seq(oid(OID.spcIndividualSpKeyPurpose))),
    attribute(OID.messageDigest, octetString(contentDigest)),
  ];
  if (options.signingTime) attrs.push(attribute(OID.signingTime, time(now)));
  // The signature covers the attributes as a DER SET OF; SignerInfo stores them as [0] IMPLICIT.
  const signedAttrsSet = setOf(...attrs);
  const attrsDigest = createHash(hash).update(signedAttrsSet).digest();
  const signature = await options.key.signDigest(hash, attrsDigest);
  // A backend returning a wrong signature (wrong key, HSM fault) must not produce a signed file.
  const spki = { key: Buffer.from(parts.spkiDer), format: 'der' as const, type: 'spki' as const };
  if (!cryptoVerify(hash, signedAttrsSet, spki, signature))
    throw signingError(
      VerificationError,
      'SIGNATURE_SELF_CHECK_FAILED',
      `the signature from key ${options.key.id} does not verify with the signer certificate`,
    );

  const signedAttrs = new Uint8Array(signedAttrsSet);
  signedAttrs[0] = ctxTag(0);
  const signerInfo = seq(
    integer(1),
    seq(parts.issuerDer, parts.serialDer),
    algorithmId(DIGEST_OIDS[hash]),
    signedAttrs,
    algorithmId(OID.rsaEncryption), // plain rsaEncryption, like signtool (authenticode.md §4)
    octetString(signature),
  );
  const signedData = seq(
    integer(1),
    setOf(algorithmId(DIGEST_OIDS[hash])),
    seq(oid(OID.spcIndirectData), explicit(0, spc)),
    tlv(ctxTag(0), ...[...options.certChainDer].sort(compareBytes)),
    setOf(signerInfo),
  );
  return { der: seq(oid(OID.signedData), explicit(0, signedData)), signature };
}

/** The image digest of `bytes` as it will be once any existing table is stripped (authenticode.md §2, §6). */
export function imageDigestForSigning(bytes: Uint8Array, info: PeInfo, hash: 'sha256' | 'sha1'): Buffer {
  const end = info.certTable ? info.certTable.offset : bytes.length;
  const { certTable: _old, ...rest } = info;
  return authenticodeDigest(bytes.subarray(0, end), { ...rest, fileSize: end }, hash);
}

/** A PE ready to be signed: parsed, with the image digest its signature will cover. */
export interface PreparedPe {
  bytes: Uint8Array;
  info: PeInfo;
  hash: 'sha256' | 'sha1';
  /** Authenticode image digest of the PE with any existing certificate table stripped. */
  imageDigest: Buffer;
  /** Bytes the digest covers (the file up to an existing certificate table). */
  imageLength: number;
}

/** Parse `bytes` and take its image digest (FormatError for input that is not a signable PE). */
export function preparePe(bytes: Uint8Array, hash: 'sha256' | 'sha1'): PreparedPe {
  const info = parsePe(bytes);
  const imageLength = info.certTable ? info.certTable.offset : bytes.length;
  return { bytes, info, hash, imageDigest: imageDigestForSigning(bytes, info, hash), imageLength };
}

/**
 * The certificate table entry (DER ContentInfo / SignedData) for a prepared PE: built, signed and, when
 * configured, timestamped. The same DER applied to any PE with the same image digest gives the same
 * signed bytes (`applySignature`).
 */
export async function signatureFor(pe: PreparedPe, options: AuthenticodeOptions): Promise<Uint8Array> {
  return (await signatureWithAuthority(pe, options)).der;
}

/**
 * As signatureFor, also naming the timestamp authority that answered (`tsa`: its URL from the profile;
 * absent when the profile does not timestamp), for the audit trail.
 */
export async function signatureWithAuthority(
  pe: PreparedPe,
  options: AuthenticodeOptions,
): Promise<{ der: Uint8Array; tsa?: string }> {
  validate(options);
  if (pe.hash !== options.digest)
    throw signingError(
      ConfigError,
      'AUTHENTICODE_BAD_OPTION',
      `the PE was prepared for ${pe.hash}, the profile signs with ${options.digest}`,
    );
  const built = await buildAuthenticodeSignature(pe.imageDigest, options);
  if (!options.timestamp) return { der: built.der };
  const { token, url } = await fetchTimestamp(built.signature, {
    ...options.timestamp,
    digest: options.timestamp.digest ?? options.digest,
  });
  return { der: embedTimestampToken(built.der, token), tsa: url };
}

/**
 * The signed PE: any existing certificate table replaced by one holding `der` (authenticode.md §6). The
 * result has its own ArrayBuffer (not Node's shared pool), so it can be transferred.
 */
export function applySignature(pe: PreparedPe, der: Uint8Array): Uint8Array {
  return writeCertificateTable(pe.bytes, pe.info, [der]);
}

/**
 * Sign a PE: strip any existing certificate table (replace, authenticode.md §6), hash, sign, optionally
 * timestamp, and append the new table. Throws FormatError for input that is not a signable PE.
 * The result has its own ArrayBuffer (not Node's shared pool), so it can be transferred.
 */
export async function signPe(bytes: Uint8Array, options: AuthenticodeOptions): Promise<Uint8Array> {
  validate(options);
  const pe = preparePe(bytes, options.digest);
  return applySignature(pe, await signatureFor(pe, options));
}
