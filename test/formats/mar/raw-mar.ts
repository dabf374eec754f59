/**
 * A deliberately unchecked MAR byte builder for hostile fixtures and fuzzing: every field can be
 * overridden, nothing is validated. (The product writer is src/mar/writer.ts.)
 */
export interface RawEntry {
  name: string | Uint8Array;
  data?: Uint8Array;
  flags?: number;
  /** Override the stored offset/size instead of the real layout. */
  offset?: number;
  size?: number;
}

export interface RawMar {
  magic?: string;
  /** 'old': no signature block, data at 8. Default 'modern'. */
  style?: 'old' | 'modern';
  signatures?: { id: number; length: number; bytes?: Uint8Array }[];
  /** Override num_signatures. */
  signatureCount?: number;
  /** Additional sections; null: no count field. Default: one libmar PIB. */
  additional?: { id: number; data: Uint8Array; size?: number }[] | null;
  additionalCount?: number;
  entries: RawEntry[];
  declaredFileSize?: number;
  indexOffset?: number;
  indexSize?: number;
  trailing?: Uint8Array;
  /** Bytes between the header and the first entry. */
  gap?: Uint8Array;
}

const enc = new TextEncoder();

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function pib(channel: string, version: string, padded = true): Uint8Array {
  const body = enc.encode(`${channel}\0${version}\0`);
  const out = new Uint8Array(padded ? 96 : body.length);
  out.set(body);
  return out;
}

export function rawMar(m: RawMar): Uint8Array {
  const head: Uint8Array[] = [];
  if (m.style !== 'old') {
    const sigs = m.signatures ?? [];
    head.push(u32(m.signatureCount ?? sigs.length));
    for (const s of sigs) head.push(u32(s.id), u32(s.length), s.bytes ?? new Uint8Array(s.length).fill(0xaa));
    const add =
      m.additional === undefined ? [{ id: 1, data: pib('@MAR_CHANNEL_ID@', '13.0a1') }] : m.additional;
    if (add !== null) {
      head.push(u32(m.additionalCount ?? add.length));
      for (const a of add) head.push(u32(a.size ?? a.data.length + 8), u32(a.id), a.data);
    }
  }
  const headerLen = 8 + (m.style === 'old' ? 0 : 8) + head.reduce((n, p) => n + p.length, 0);
  const gap = m.gap ?? new Uint8Array(0);
  let pos = headerLen + gap.length;
  const data: Uint8Array[] = [];
  const records: Uint8Array[] = [];
  for (const e of m.entries) {
    const d = e.data ?? new Uint8Array(0);
    const name = typeof e.name === 'string' ? enc.encode(e.name) : e.name;
    records.push(
      u32(e.offset ?? pos),
      u32(e.size ?? d.length),
      u32(e.flags ?? 0o644),
      name,
      new Uint8Array([0]),
    );
    data.push(d);
    pos += d.length;
  }
  const index = concat(records);
  const indexOffset = m.indexOffset ?? pos;
  const trailing = m.trailing ?? new Uint8Array(0);
  const fileSize = pos + 4 + index.length + trailing.length;
  const size64 = new Uint8Array(8);
  new DataView(size64.buffer).setBigUint64(0, BigInt(m.declaredFileSize ?? fileSize));
  return concat([
    enc.encode(m.magic ?? 'MAR1'),
    u32(indexOffset),
    ...(m.style === 'old' ? [] : [size64]),
    ...head,
    gap,
    ...data,
    u32(m.indexSize ?? index.length),
    index,
    trailing,
  ]);
}
