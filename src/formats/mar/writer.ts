import { assertSafeName } from './names.js';
import {
  MAR_ADDITIONAL_ID_PRODUCT_INFO,
  MAR_MAGIC,
  MAR_MAX_CHANNEL_LENGTH,
  MAR_MAX_SIGNATURES,
  MAR_MAX_SIGNATURE_LENGTH,
  MAR_MAX_VERSION_LENGTH,
  MAR_PADDED_PRODUCT_INFO_SIZE,
  MAR_SIGNATURE_ALGORITHMS,
  MAR_SIGNATURE_BLOCK_OFFSET,
  marError,
  type MarAdditionalSection,
  type MarEntry,
  type MarSignatureInfo,
  type ProductInfo,
} from './types.js';

export interface SignatureSlot {
  algorithmId: number;
  length: number;
}

export interface MarLayoutOptions {
  productInfo?: ProductInfo;
  signatureSlots?: SignatureSlot[];
  /**
   * Write the u32 additional-section count (default true, as libmar mar_create does). false reproduces
   * signmar signing an old-style MAR (no count field, §4.3); only allowed without productInfo.
   */
  additionalHeader?: boolean;
}

export interface MarHeaderLayout {
  /** Bytes [0, dataStart) with offset_to_index and file_size zero and zeroed signature slots. */
  header: Uint8Array;
  dataStart: number;
  signatures: MarSignatureInfo[];
  hasAdditionalHeader: boolean;
  additionalSections: MarAdditionalSection[];
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export function validateProductInfo(pi: ProductInfo): void {
  for (const [what, value, max] of [
    ['channel', pi.channel, MAR_MAX_CHANNEL_LENGTH],
    ['product version', pi.version, MAR_MAX_VERSION_LENGTH],
  ] as const) {
    if (!PRINTABLE_ASCII.test(value))
      throw marError('MAR_PRODUCT_INFO_INVALID', `${what} ${JSON.stringify(value)} is not printable ASCII`);
    if (value.length > max)
      throw marError(
        'MAR_PRODUCT_INFO_INVALID',
        `${what} ${JSON.stringify(value)} is longer than ${max} bytes`,
      );
  }
}

/** libmar's fixed 104-byte product-information block (mar_concat_product_info_block, §4.2). */
export function encodeProductInfo(pi: ProductInfo): Uint8Array {
  validateProductInfo(pi);
  const out = new Uint8Array(MAR_PADDED_PRODUCT_INFO_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAR_PADDED_PRODUCT_INFO_SIZE);
  dv.setUint32(4, MAR_ADDITIONAL_ID_PRODUCT_INFO);
  const enc = new TextEncoder();
  out.set(enc.encode(pi.channel), 8);
  out.set(enc.encode(pi.version), 8 + pi.channel.length + 1);
  return out;
}

export function validateSignatureSlots(slots: SignatureSlot[]): void {
  if (slots.length > MAR_MAX_SIGNATURES)
    throw marError(
      'MAR_TOO_MANY_SIGNATURES',
      `${slots.length} signature slots, more than ${MAR_MAX_SIGNATURES}`,
    );
  for (const [i, s] of slots.entries()) {
    if (!(s.algorithmId in MAR_SIGNATURE_ALGORITHMS))
      throw marError(
        'MAR_UNKNOWN_SIGNATURE_ALGORITHM',
        `signature slot ${i}: unknown algorithm id ${s.algorithmId}`,
      );
    if (!Number.isInteger(s.length) || s.length <= 0 || s.length > MAR_MAX_SIGNATURE_LENGTH)
      throw marError(
        'MAR_SIGNATURE_TOO_LARGE',
        `signature slot ${i}: length ${s.length} not in 1..${MAR_MAX_SIGNATURE_LENGTH}`,
      );
  }
}

/** The header of a modern MAR as libmar mar_create + signmar lay it out (§2). */
export function marHeaderLayout(options: MarLayoutOptions): MarHeaderLayout {
  const slots = options.signatureSlots ?? [];
  validateSignatureSlots(slots);
  const additionalHeader = options.additionalHeader ?? true;
  if (!additionalHeader && options.productInfo)
    throw marError(
      'MAR_PRODUCT_INFO_INVALID',
      'a product-information block needs the additional-section header',
    );
  const pib = options.productInfo ? encodeProductInfo(options.productInfo) : undefined;
  const sigBytes = slots.reduce((n, s) => n + 8 + s.length, 0);
  const dataStart =
    MAR_SIGNATURE_BLOCK_OFFSET + 4 + sigBytes + (additionalHeader ? 4 : 0) + (pib?.length ?? 0);
  const header = new Uint8Array(dataStart);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, MAR_MAGIC);
  dv.setUint32(MAR_SIGNATURE_BLOCK_OFFSET, slots.length);
  let pos = MAR_SIGNATURE_BLOCK_OFFSET + 4;
  const signatures: MarSignatureInfo[] = [];
  for (const s of slots) {
    dv.setUint32(pos, s.algorithmId);
    dv.setUint32(pos + 4, s.length);
    signatures.push({ algorithmId: s.algorithmId, length: s.length, offset: pos + 8 });
    pos += 8 + s.length;
  }
  const additionalSections: MarAdditionalSection[] = [];
  if (additionalHeader) {
    dv.setUint32(pos, pib ? 1 : 0);
    pos += 4;
    if (pib) {
      header.set(pib, pos);
      additionalSections.push({ id: MAR_ADDITIONAL_ID_PRODUCT_INFO, offset: pos, size: pib.length });
    }
  }
  return { header, dataStart, signatures, hasAdditionalHeader: additionalHeader, additionalSections };
}

/** Bytes [0, 16): magic, offset_to_index, file_size — written once the index position is known. */
export function encodeHeaderFields(indexOffset: number, fileSize: number): Uint8Array {
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAR_MAGIC);
  dv.setUint32(4, indexOffset);
  dv.setBigUint64(8, BigInt(fileSize));
  return out;
}

/** The index: u32 index_size, then { u32 offset, u32 size, u32 flags, name, NUL } per entry (§6). */
export function encodeIndex(entries: readonly MarEntry[]): Uint8Array {
  const enc = new TextEncoder();
  const names = entries.map((e) => {
    assertSafeName(e.name);
    return enc.encode(e.name);
  });
  const size = names.reduce((n, b) => n + 13 + b.length, 0);
  const out = new Uint8Array(4 + size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, size);
  let pos = 4;
  entries.forEach((e, i) => {
    dv.setUint32(pos, e.offset);
    dv.setUint32(pos + 4, e.size);
    dv.setUint32(pos + 8, e.flags);
    out.set(names[i]!, pos + 12);
    pos += 13 + names[i]!.length;
  });
  return out;
}
