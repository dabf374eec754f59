/**
 * Extra fields (§4.5): parsing into records (strict: every byte must belong to a record), the zip64
 * extended-information field (§4.5.3) read and rewritten in place, and byte helpers shared by the reader
 * and the encoders.
 */
import { Cursor } from '../cursor.js';
import { ZIP_EXTRA_ZIP64, ZIP_FORMAT, zipError, type ZipExtraRecord } from './types.js';

/** Largest value a u64 field may hold here: JS numbers are exact to 2^53 (yauzl has the same limit). */
const MAX_U64_HIGH = 2 ** 21;

/** A little-endian u64 as a number; ZIP_ZIP64_INVALID if it is not exact in a double. */
export function readU64(c: Cursor): number {
  const at = c.fileOffset;
  const lo = c.u32le();
  const hi = c.u32le();
  if (hi >= MAX_U64_HIGH)
    throw zipError(
      'ZIP_ZIP64_INVALID',
      `64-bit value 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is too large`,
      at,
    );
  return hi * 2 ** 32 + lo;
}

export function writeU64(dv: DataView, at: number, value: number): void {
  dv.setUint32(at, value % 2 ** 32, true);
  dv.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

/** Split an extra field into its records; ZIP_EXTRA_FIELD_INVALID if a record runs past the end. */
export function parseExtra(bytes: Uint8Array, offset: number, what: string): ZipExtraRecord[] {
  const c = new Cursor(bytes, ZIP_FORMAT, offset, 'ZIP_EXTRA_FIELD_INVALID');
  const out: ZipExtraRecord[] = [];
  while (c.remaining > 0) {
    const at = c.fileOffset;
    if (c.remaining < 4)
      throw zipError(
        'ZIP_EXTRA_FIELD_INVALID',
        `${what}: ${c.remaining} stray bytes at the end of the extra field`,
        at,
      );
    const id = c.u16le();
    const len = c.u16le();
    if (len > c.remaining)
      throw zipError(
        'ZIP_EXTRA_FIELD_INVALID',
        `${what}: extra record 0x${id.toString(16).padStart(4, '0')} of ${len} bytes runs past the field (${c.remaining} left)`,
        at,
      );
    out.push({ id, data: c.bytesView(len) });
  }
  return out;
}

export function encodeExtra(records: readonly ZipExtraRecord[]): Uint8Array {
  const out = new Uint8Array(records.reduce((n, r) => n + 4 + r.data.length, 0));
  const dv = new DataView(out.buffer);
  let pos = 0;
  for (const r of records) {
    dv.setUint16(pos, r.id, true);
    dv.setUint16(pos + 2, r.data.length, true);
    out.set(r.data, pos + 4);
    pos += 4 + r.data.length;
  }
  return out;
}

/** The slots of a zip64 extended-information field, always in this order (§4.5.3). */
export type Zip64Slot = 'uncompressedSize' | 'compressedSize' | 'localHeaderOffset' | 'diskStart';
export const ZIP64_SLOT_ORDER: readonly Zip64Slot[] = [
  'uncompressedSize',
  'compressedSize',
  'localHeaderOffset',
  'diskStart',
];
const slotSize = (s: Zip64Slot): number => (s === 'diskStart' ? 4 : 8);

/**
 * Read the given slots (those whose header field held the sentinel, in §4.5.3 order) from a zip64
 * field's data. Bytes after them are left alone (some writers add slots no sentinel asked for).
 */
export function readZip64Slots(
  data: Uint8Array,
  slots: readonly Zip64Slot[],
  offset: number,
  what: string,
): Partial<Record<Zip64Slot, number>> {
  const need = slots.reduce((n, s) => n + slotSize(s), 0);
  if (data.length < need)
    throw zipError(
      'ZIP_ZIP64_INVALID',
      `${what}: zip64 extra field has ${data.length} bytes, ${need} needed for ${slots.join(', ')}`,
      offset,
    );
  const c = new Cursor(data, ZIP_FORMAT, offset, 'ZIP_ZIP64_INVALID');
  const out: Partial<Record<Zip64Slot, number>> = {};
  for (const s of slots) out[s] = s === 'diskStart' ? c.u32le() : readU64(c);
  return out;
}

/**
 * A zip64 field's data holding `values` in slot order. When the slots are the ones `original` held,
 * the original data is copied with only the values changed (trailing bytes kept); otherwise the slots
 * are written afresh followed by whatever the original had after its slots.
 */
export function encodeZip64Data(
  values: Partial<Record<Zip64Slot, number>>,
  original?: { data: Uint8Array; slots: readonly Zip64Slot[] },
): Uint8Array {
  const slots = ZIP64_SLOT_ORDER.filter((s) => values[s] !== undefined);
  const size = slots.reduce((n, s) => n + slotSize(s), 0);
  const origSize = original ? original.slots.reduce((n, s) => n + slotSize(s), 0) : 0;
  const trailing = original ? original.data.subarray(origSize) : new Uint8Array(0);
  const out = new Uint8Array(size + trailing.length);
  out.set(trailing, size);
  const dv = new DataView(out.buffer);
  let pos = 0;
  for (const s of slots) {
    if (s === 'diskStart') dv.setUint32(pos, values[s]!, true);
    else writeU64(dv, pos, values[s]!);
    pos += slotSize(s);
  }
  return out;
}

/**
 * Replace (or append) the zip64 record of an extra field, keeping every other record's bytes and
 * position. `data` undefined removes nothing and adds nothing: the field is returned as is.
 */
export function withZip64Record(
  records: readonly ZipExtraRecord[],
  data: Uint8Array | undefined,
): ZipExtraRecord[] {
  if (data === undefined) return [...records];
  const i = records.findIndex((r) => r.id === ZIP_EXTRA_ZIP64);
  if (i < 0) return [...records, { id: ZIP_EXTRA_ZIP64, data }];
  return records.map((r, j) => (j === i ? { id: ZIP_EXTRA_ZIP64, data } : r));
}
