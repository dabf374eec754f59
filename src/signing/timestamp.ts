/**
 * RFC 3161 timestamps for Authenticode (../shared/docs/authenticode.md §7): the imprint is the hash of
 * the SignerInfo's encryptedDigest, the reply's token goes into the unsigned attribute
 * 1.3.6.1.4.1.311.3.3.1. Authorities are tried in order, each `retries` times with doubling backoff.
 * The HTTP exchange sits behind `TimestampTransport`, so callers never hold a client.
 */
import { createHash, randomBytes } from 'node:crypto';
import { AuthorityError, ConfigError, TransientError, type CodedError } from '../errors.js';
import { signingError, signingFormatError } from './errors.js';
import {
  algorithmId,
  boolean,
  bytesEqual,
  children,
  ctxTag,
  decode,
  expectTag,
  explicit,
  integer,
  octetString,
  oid,
  readOid,
  readSmallInt,
  readTime,
  seq,
  setOf,
  TAG,
  tlv,
  uintFromBytes,
  type DerNode,
} from '../formats/asn1/der.js';
import { DIGEST_OIDS, OID, type DigestName } from '../formats/asn1/oids.js';
import { parseSignedData, type SignedData } from '../formats/asn1/pkcs7.js';
import type { TimestampOptions } from './types.js';

/** Largest TimeStampResp read from an authority. */
export const MAX_TSA_RESPONSE = 1024 * 1024;
export const TIMESTAMP_DEFAULTS = {
  retries: 3,
  backoffMs: 500,
  timeoutMs: 10_000,
  digest: 'sha256',
} as const;

export interface TransportReply {
  status: number;
  contentType: string | null;
  body: Uint8Array;
}

/** POST a DER request and return the reply; throws on network failure or timeout. */
export type TimestampTransport = (
  url: string,
  body: Uint8Array,
  timeoutMs: number,
) => Promise<TransportReply>;

export const httpTransport: TimestampTransport = async (url, body, timeoutMs) => {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/timestamp-query', accept: 'application/timestamp-reply' },
    body,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > MAX_TSA_RESPONSE) {
        throw signingError(AuthorityError, 'TSA_BAD_REPLY', `reply is larger than ${MAX_TSA_RESPONSE} bytes`);
      }
      chunks.push(chunk);
    }
  }
  return { status: res.status, contentType: res.headers.get('content-type'), body: Buffer.concat(chunks) };
};

/** TimeStampReq (RFC 3161 2.4.1) with a nonce and certReq TRUE. */
export function buildTimestampRequest(imprint: Uint8Array, hash: DigestName, nonce: Uint8Array): Uint8Array {
  return seq(
    integer(1),
    seq(algorithmId(DIGEST_OIDS[hash]), octetString(imprint)),
    uintFromBytes(nonce),
    boolean(true),
  );
}

export interface TstInfo {
  policy: string;
  hashAlgorithm: string;
  imprint: Uint8Array;
  serialDer: Uint8Array;
  genTime: Date;
  /** The nonce INTEGER, whole TLV. */
  nonceDer?: Uint8Array;
}

export interface TimestampToken {
  signedData: SignedData;
  tstInfo: TstInfo;
  /** The TSTInfo DER (the eContent octets), what the token's messageDigest covers. */
  tstInfoDer: Uint8Array;
}

/** Parse a token: ContentInfo SignedData with eContentType id-ct-TSTInfo (RFC 3161 2.4.2). */
export function readTimestampToken(token: Uint8Array): TimestampToken {
  const signedData = parseSignedData(token);
  if (signedData.contentType !== OID.tstInfo)
    throw signingFormatError(
      'rfc3161',
      'TSA_BAD_TOKEN',
      `token content type ${signedData.contentType} is not TSTInfo`,
    );
  const octets = expectTag(signedData.content, TAG.OCTET_STRING, 'TSTInfo eContent', 'TSA_BAD_TOKEN');
  const tstInfoDer = octets.value;
  const f = children(expectTag(decode(tstInfoDer), TAG.SEQUENCE, 'TSTInfo', 'TSA_BAD_TOKEN'));
  const [, policy, mi, serial, gen, ...rest] = f;
  const [alg, hashed] = children(expectTag(mi, TAG.SEQUENCE, 'messageImprint', 'TSA_BAD_TOKEN'));
  const tstInfo: TstInfo = {
    policy: readOid(expectTag(policy, TAG.OID, 'policy', 'TSA_BAD_TOKEN')),
    hashAlgorithm: readOid(
      expectTag(
        children(expectTag(alg, TAG.SEQUENCE, 'hashAlgorithm', 'TSA_BAD_TOKEN'))[0],
        TAG.OID,
        'hashAlgorithm',
        'TSA_BAD_TOKEN',
      ),
    ),
    imprint: expectTag(hashed, TAG.OCTET_STRING, 'hashedMessage', 'TSA_BAD_TOKEN').value,
    serialDer: expectTag(serial, TAG.INTEGER, 'serialNumber', 'TSA_BAD_TOKEN').der,
    genTime: readTime(expectTag(gen, TAG.GENERALIZED_TIME, 'genTime', 'TSA_BAD_TOKEN')),
  };
  const nonce = rest.find((n: DerNode) => n.tag === TAG.INTEGER);
  if (nonce) tstInfo.nonceDer = nonce.der;
  return { signedData, tstInfo, tstInfoDer };
}

const PKI_STATUS = [
  'granted',
  'grantedWithMods',
  'rejection',
  'waiting',
  'revocationWarning',
  'revocationNotification',
];

/**
 * Check a TimeStampResp against what was asked; returns the token DER. A reply that is not what was
 * asked for throws AuthorityError (the authority's fault, not a verdict on the signed file).
 */
export function checkTimestampResponse(
  der: Uint8Array,
  imprint: Uint8Array,
  hash: DigestName,
  nonce?: Uint8Array,
): Uint8Array {
  let token: DerNode | undefined;
  let status: number;
  try {
    const [statusInfo, tok] = children(
      expectTag(decode(der), TAG.SEQUENCE, 'TimeStampResp', 'TSA_BAD_REPLY'),
    );
    status = readSmallInt(
      expectTag(
        children(expectTag(statusInfo, TAG.SEQUENCE, 'PKIStatusInfo', 'TSA_BAD_REPLY'))[0],
        TAG.INTEGER,
        'PKIStatus',
        'TSA_BAD_REPLY',
      ),
    );
    token = tok;
  } catch (e) {
    throw signingError(AuthorityError, 'TSA_BAD_REPLY', `not a TimeStampResp: ${(e as Error).message}`, {
      cause: e,
    });
  }
  // 0 granted, 1 grantedWithMods (RFC 3161 2.4.2); anything else carries no usable token.
  if (status > 1 || !token)
    throw signingError(
      AuthorityError,
      'TSA_REJECTED',
      `authority answered status ${status} (${PKI_STATUS[status] ?? 'unknown'})${token ? '' : ' without a token'}`,
      { details: { status } },
    );
  let parsed: TimestampToken;
  try {
    parsed = readTimestampToken(token.der);
  } catch (e) {
    throw signingError(AuthorityError, 'TSA_BAD_REPLY', `bad timeStampToken: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const t = parsed.tstInfo;
  if (t.hashAlgorithm !== DIGEST_OIDS[hash] || !bytesEqual(t.imprint, imprint))
    throw signingError(
      AuthorityError,
      'TSA_IMPRINT_MISMATCH',
      `token imprint ${Buffer.from(t.imprint).toString('hex')} (${t.hashAlgorithm}) is not the ${hash} of our signature ${Buffer.from(imprint).toString('hex')}`,
    );
  if (nonce && (!t.nonceDer || !bytesEqual(t.nonceDer, uintFromBytes(nonce))))
    throw signingError(AuthorityError, 'TSA_NONCE_MISMATCH', 'token nonce does not match the request');
  return new Uint8Array(token.der);
}

function validateOptions(o: TimestampOptions): Required<TimestampOptions> {
  if (!Array.isArray(o.urls) || o.urls.length === 0)
    throw signingError(ConfigError, 'TSA_BAD_OPTION', 'timestamp.urls must list at least one authority');
  for (const u of o.urls) {
    let p: URL;
    try {
      p = new URL(u);
    } catch {
      throw signingError(ConfigError, 'TSA_BAD_OPTION', `timestamp url ${JSON.stringify(u)} is not a URL`);
    }
    if (p.protocol !== 'http:' && p.protocol !== 'https:')
      throw signingError(ConfigError, 'TSA_BAD_OPTION', `timestamp url ${u} must be http or https`);
  }
  const r = {
    urls: o.urls,
    retries: o.retries ?? TIMESTAMP_DEFAULTS.retries,
    backoffMs: o.backoffMs ?? TIMESTAMP_DEFAULTS.backoffMs,
    timeoutMs: o.timeoutMs ?? TIMESTAMP_DEFAULTS.timeoutMs,
    digest: o.digest ?? TIMESTAMP_DEFAULTS.digest,
  };
  if (!Number.isInteger(r.retries) || r.retries < 1)
    throw signingError(
      ConfigError,
      'TSA_BAD_OPTION',
      `timestamp.retries must be a positive integer, got ${r.retries}`,
    );
  if (!Number.isFinite(r.backoffMs) || r.backoffMs < 0)
    throw signingError(ConfigError, 'TSA_BAD_OPTION', `timestamp.backoffMs must be >= 0, got ${r.backoffMs}`);
  if (!Number.isFinite(r.timeoutMs) || r.timeoutMs <= 0)
    throw signingError(ConfigError, 'TSA_BAD_OPTION', `timestamp.timeoutMs must be > 0, got ${r.timeoutMs}`);
  if (!(r.digest in DIGEST_OIDS))
    throw signingError(
      ConfigError,
      'TSA_BAD_OPTION',
      `timestamp.digest ${String(r.digest)} is not supported`,
    );
  return r;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Failure {
  url: string;
  attempt: number;
  code: string;
  message: string;
}

/** One line naming each authority tried with its last failure (and how many attempts it got). */
function describeFailures(failures: readonly Failure[]): string {
  const last = new Map<string, Failure>();
  for (const f of failures) last.set(f.url, f);
  return [...last.values()]
    .map(
      (f) =>
        `${f.url}: ${f.code}: ${f.message.split('\n')[0]}${f.attempt > 1 ? ` (${f.attempt} attempts)` : ''}`,
    )
    .join('; ');
}

/**
 * Get a timestamp token for `signatureBytes` (a SignerInfo encryptedDigest). A network failure,
 * timeout or HTTP 408/429/5xx is retried; a bad reply moves on to the next authority. When all fail:
 * TransientError `TSA_UNAVAILABLE` (retryable) if any failure was transient, otherwise an
 * AuthorityError with the first bad reply's code (`TSA_REJECTED`, `TSA_BAD_REPLY`,
 * `TSA_IMPRINT_MISMATCH`, ...). Either message names every authority tried with its failure;
 * `details.failures` lists each attempt.
 */
export async function fetchTimestampToken(
  signatureBytes: Uint8Array,
  options: TimestampOptions,
  transport: TimestampTransport = httpTransport,
): Promise<Uint8Array> {
  return (await fetchTimestamp(signatureBytes, options, transport)).token;
}

/** As fetchTimestampToken, also naming the authority that answered (`url`, from `options.urls`). */
export async function fetchTimestamp(
  signatureBytes: Uint8Array,
  options: TimestampOptions,
  transport: TimestampTransport = httpTransport,
): Promise<{ token: Uint8Array; url: string }> {
  const o = validateOptions(options);
  const imprint = createHash(o.digest).update(signatureBytes).digest();
  const failures: Failure[] = [];
  let firstBad: CodedError | undefined;
  let anyTransient = false;
  for (const url of o.urls) {
    for (let attempt = 1; attempt <= o.retries; attempt++) {
      const nonce = randomBytes(8);
      nonce[0]! &= 0x7f;
      nonce[0]! |= 0x01;
      const req = buildTimestampRequest(imprint, o.digest, nonce);
      let reply: TransportReply;
      try {
        reply = await transport(url, req, o.timeoutMs);
      } catch (e) {
        if (e instanceof AuthorityError) {
          failures.push({ url, attempt, code: e.code, message: e.message });
          firstBad ??= e;
          break;
        }
        // undici's "fetch failed" keeps the socket error (ECONNREFUSED, ...) in `cause`.
        const cause = (e as { cause?: { code?: string; message?: string } }).cause;
        const code = cause?.code ?? (e as Error).name ?? 'ERROR';
        failures.push({ url, attempt, code, message: cause?.message ?? (e as Error).message });
        anyTransient = true;
        if (attempt < o.retries) await sleep(o.backoffMs * 2 ** (attempt - 1));
        continue;
      }
      if (reply.status >= 500 || reply.status === 408 || reply.status === 429) {
        failures.push({ url, attempt, code: `HTTP_${reply.status}`, message: `HTTP ${reply.status}` });
        anyTransient = true;
        if (attempt < o.retries) await sleep(o.backoffMs * 2 ** (attempt - 1));
        continue;
      }
      try {
        if (reply.status !== 200)
          throw signingError(AuthorityError, 'TSA_BAD_REPLY', `HTTP ${reply.status}`, {
            details: { status: reply.status },
          });
        return { token: checkTimestampResponse(reply.body, imprint, o.digest, nonce), url };
      } catch (e) {
        const err = e as CodedError;
        failures.push({ url, attempt, code: err.code, message: err.message });
        firstBad ??= err;
        break;
      }
    }
  }
  if (anyTransient || !firstBad)
    throw signingError(
      TransientError,
      'TSA_UNAVAILABLE',
      `no timestamp authority answered: ${describeFailures(failures)}`,
      { details: { failures } },
    );
  // firstBad.code is passed through: usually a SigningErrorCode, but a custom transport may raise its own.
  throw new AuthorityError(firstBad.code, `no usable timestamp token: ${describeFailures(failures)}`, {
    cause: firstBad,
    details: { failures },
  });
}

/**
 * Put `token` into the first SignerInfo of an Authenticode ContentInfo as the unsigned attribute
 * 1.3.6.1.4.1.311.3.3.1, replacing any earlier RFC 3161 or legacy counter-signature timestamp
 * (osslsigncode X509_attribute_chain_append_object). Signed bytes are untouched.
 */
export function embedTimestampToken(contentInfoDer: Uint8Array, token: Uint8Array): Uint8Array {
  const sd = parseSignedData(contentInfoDer);
  const si = sd.signerInfos[0];
  if (!si) throw signingFormatError('pkcs7', 'PKCS7_MALFORMED', 'SignedData has no SignerInfo');
  const kept = si.unsignedAttrs
    .filter((a) => a.oid !== OID.spcRfc3161Timestamp && a.oid !== OID.counterSignature)
    .map((a) => a.node.der);
  const attr = seq(oid(OID.spcRfc3161Timestamp), setOf(token));
  const unsigned = setOf(...kept, attr);
  unsigned[0] = ctxTag(1);
  const siParts = children(si.node)
    .filter((n) => n !== si.unsignedAttrsNode && n.offset !== si.unsignedAttrsNode?.offset)
    .map((n) => n.der);
  const newSi = seq(...siParts, unsigned);
  const sdParts = children(sd.signedDataNode);
  const signerInfosNode = sdParts[sdParts.length - 1]!;
  const others = children(signerInfosNode)
    .slice(1)
    .map((n) => n.der);
  const newSd = seq(...sdParts.slice(0, -1).map((n) => n.der), tlv(TAG.SET, newSi, ...others));
  return seq(oid(OID.signedData), explicit(0, newSd));
}
