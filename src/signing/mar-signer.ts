import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.js';
import { signingError } from './errors.js';
import { FileSource } from '../io/byte-source.js';
import {
  MAR_MAX_SIGNATURES,
  readEntryBytes,
  readMar,
  type MarInfo,
  type SignatureSlot,
} from '../formats/mar/index.js';
import { MarWriter } from '../mar/writer.js';
import type { SigningKey } from '../keys/types.js';

export type MarAlgorithm = 'sha384' | 'sha1';

/** mar-format.md §3: id 1 = RSA PKCS#1 v1.5 + SHA-1, id 2 = RSA PKCS#1 v1.5 + SHA-384. */
export const MAR_ALGORITHM_IDS: Readonly<Record<MarAlgorithm, number>> = { sha1: 1, sha384: 2 };

export interface MarSignOptions {
  keys: SigningKey[];
  algorithm: MarAlgorithm;
}

function checkKeys(keys: SigningKey[], algorithm: MarAlgorithm): void {
  if (!(algorithm in MAR_ALGORITHM_IDS)) {
    throw signingError(
      ConfigError,
      'MAR_ALGORITHM_UNSUPPORTED',
      `MAR algorithm must be sha384 or sha1, got ${String(algorithm)}`,
    );
  }
  if (keys.length === 0 || keys.length > MAR_MAX_SIGNATURES) {
    throw signingError(
      ConfigError,
      'MAR_KEYS_INVALID',
      `a MAR takes 1 to ${MAR_MAX_SIGNATURES} signatures, got ${keys.length} keys`,
    );
  }
  for (const [i, k] of keys.entries()) {
    if (k.type !== 'rsa')
      throw signingError(
        ConfigError,
        'KEY_UNSUPPORTED',
        `MAR key ${i} is ${String(k.type)}, only RSA is supported`,
      );
  }
}

/**
 * The signature slots (one per key, in order) to reserve with MarWriter.create: the whole layout
 * must be fixed before hashing because lengths and ids are part of the signed stream (§8).
 */
export function marSignatureSlots(keys: SigningKey[], algorithm: MarAlgorithm): SignatureSlot[] {
  checkKeys(keys, algorithm);
  return keys.map((k) => ({ algorithmId: MAR_ALGORITHM_IDS[algorithm], length: k.bits / 8 }));
}

/**
 * After `writer.finish()`: hash the signed stream once, sign the digest with every key, fill the
 * slots. The writer must have been created with `marSignatureSlots(keys, algorithm)`.
 */
export async function signWriter(
  writer: MarWriter,
  keys: SigningKey[],
  algorithm: MarAlgorithm,
): Promise<Uint8Array[]> {
  checkKeys(keys, algorithm);
  const digest = await hashStream(algorithm, writer.signable());
  const sigs = await Promise.all(keys.map((k) => k.signDigest(algorithm, digest)));
  await writer.setSignatures(sigs);
  return sigs;
}

/**
 * Sign a MAR: repack its stored entry bytes (no recompression) into a new file with one signature
 * slot per key and the same product information, hash, sign, rename into place — signmar's
 * mar_repackage_and_sign. Existing signatures are replaced. An old-style MAR, or a signed one without
 * the additional-section count, keeps that layout (signmar on an old-style MAR, §4.3), so
 * signed_no_pib.mar is reproduced. `input` may equal `output`.
 */
async function hashStream(algorithm: MarAlgorithm, chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const h = createHash(algorithm);
  for await (const chunk of chunks) h.update(chunk);
  return new Uint8Array(h.digest());
}

export async function signMarFile(input: string, output: string, options: MarSignOptions): Promise<MarInfo> {
  const slots = marSignatureSlots(options.keys, options.algorithm);
  const src = await FileSource.open(input);
  try {
    const info = await readMar(src);
    const writer = await MarWriter.create(output, {
      signatureSlots: slots,
      ...(info.productInfo
        ? { productInfo: { channel: info.productInfo.channel, version: info.productInfo.version } }
        : {}),
      additionalHeader:
        info.style === 'modern' ? info.hasAdditionalHeader || info.productInfo !== undefined : false,
    });
    try {
      for (const e of info.entries) await writer.addEntry(e.name, e.flags, await readEntryBytes(src, e));
      const out = await writer.finish();
      await signWriter(writer, options.keys, options.algorithm);
      await writer.commit();
      return out;
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } finally {
    await src.close();
  }
}
