/**
 * A deliberately unchecked zip byte builder for hostile fixtures and fuzzing: every field can be
 * overridden, nothing is validated. (The product writer is src/zip/writer.ts.)
 */
import { crc32, deflateRawSync } from 'node:zlib';

export interface RawLocal {
  signature?: number;
  versionNeeded?: number;
  flags?: number;
  method?: number;
  dosTime?: number;
  dosDate?: number;
  crc32?: number;
  compressedSize?: number;
  uncompressedSize?: number;
  name?: string | Uint8Array;
  extra?: Uint8Array;
}

export interface RawZipEntry {
  name: string | Uint8Array;
  /** Uncompressed content (default empty). */
  content?: Uint8Array;
  /** Stored bytes; default the content (method 0) or its raw deflate (method 8). */
  data?: Uint8Array;
  method?: number;
  /** Default: bit 11 if the name is not ASCII; bit 3 with a descriptor. */
  flags?: number;
  crc32?: number;
  compressedSize?: number;
  uncompressedSize?: number;
  versionMadeBy?: number;
  versionNeeded?: number;
  dosTime?: number;
  dosDate?: number;
  internalAttributes?: number;
  externalAttributes?: number;
  diskStart?: number;
  extra?: Uint8Array;
  comment?: Uint8Array;
  centralSignature?: number;
  /** Override the central record's local-header offset. */
  localHeaderOffset?: number;
  /** Local header overrides (default: the central values, zeros for a descriptor's deferred fields). */
  local?: RawLocal;
  /** Zip64 forms: local = sentinel sizes + zip64 extra; central = these fields as sentinels + zip64 extra. */
  zip64?: { local?: boolean; central?: ('uncompressedSize' | 'compressedSize' | 'localHeaderOffset')[] };
  /** Write a data descriptor (sets flag bit 3). */
  descriptor?: {
    signature?: boolean;
    zip64?: boolean;
    crc32?: number;
    compressedSize?: number;
    uncompressedSize?: number;
  };
  /** Bytes after this entry's data and descriptor. */
  after?: Uint8Array;
}

export interface RawZip {
  prefix?: Uint8Array;
  entries: RawZipEntry[];
  /** Central directory order, as indexes into `entries` (default their order). */
  centralOrder?: number[];
  /** Bytes appended inside the central directory (counted in its size). */
  centralTrailer?: Uint8Array;
  /** Bytes between the central directory and the end records. */
  afterCentral?: Uint8Array;
  comment?: Uint8Array;
  eocd?: {
    signature?: number;
    diskNumber?: number;
    centralDirectoryDisk?: number;
    entriesOnDisk?: number;
    totalEntries?: number;
    centralDirectorySize?: number;
    centralDirectoryOffset?: number;
    commentLength?: number;
  };
  /** Write a zip64 end record + locator; `sentinels` puts 0xFFFF/0xFFFFFFFF in the EOCD fields. */
  zip64End?: {
    sentinels?: boolean;
    signature?: number;
    recordSize?: number;
    diskNumber?: number;
    centralDirectoryDisk?: number;
    entriesOnDisk?: number;
    totalEntries?: number;
    centralDirectorySize?: number;
    centralDirectoryOffset?: number;
    extensible?: Uint8Array;
    locatorSignature?: number;
    locatorDisk?: number;
    locatorOffset?: number;
    locatorTotalDisks?: number;
  };
  trailing?: Uint8Array;
}

const enc = new TextEncoder();
const bytesOf = (s: string | Uint8Array): Uint8Array => (typeof s === 'string' ? enc.encode(s) : s);

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

class Bytes {
  private readonly parts: number[] = [];
  u16(n: number): this {
    this.parts.push(n & 0xff, (n >>> 8) & 0xff);
    return this;
  }
  u32(n: number): this {
    return this.u16(n & 0xffff).u16(Math.floor(n / 0x10000) & 0xffff);
  }
  u64(n: number): this {
    return this.u32(n % 2 ** 32).u32(Math.floor(n / 2 ** 32));
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  done(): Uint8Array {
    return new Uint8Array(this.parts);
  }
}

export function extraRecord(id: number, data: Uint8Array): Uint8Array {
  return new Bytes().u16(id).u16(data.length).raw(data).done();
}

const SENT = 0xffffffff;

export function rawZip(z: RawZip): Uint8Array {
  const parts: Uint8Array[] = [];
  let pos = 0;
  const push = (b: Uint8Array): void => {
    parts.push(b);
    pos += b.length;
  };
  if (z.prefix) push(z.prefix);
  const central: Uint8Array[] = [];
  const records: Uint8Array[] = [];
  for (const e of z.entries) {
    const name = bytesOf(e.name);
    const content = e.content ?? new Uint8Array(0);
    const method = e.method ?? 0;
    const data = e.data ?? (method === 8 ? new Uint8Array(deflateRawSync(content)) : content);
    const crc = e.crc32 ?? crc32(content);
    const cs = e.compressedSize ?? data.length;
    const us = e.uncompressedSize ?? content.length;
    const ascii = name.every((b) => b < 0x80);
    const flags = e.flags ?? (ascii ? 0 : 0x800) | (e.descriptor ? 8 : 0);
    const dosTime = e.dosTime ?? 0x6000;
    const dosDate = e.dosDate ?? 0x5a21;
    const versionNeeded = e.versionNeeded ?? (e.zip64 ? 45 : 20);
    const offset = pos;
    const l = e.local ?? {};
    const deferred = e.descriptor !== undefined;
    let localExtra = l.extra ?? e.extra ?? new Uint8Array(0);
    let lcs = deferred ? 0 : cs;
    let lus = deferred ? 0 : us;
    if (e.zip64?.local) {
      localExtra = concat([localExtra, extraRecord(1, new Bytes().u64(lus).u64(lcs).done())]);
      lcs = SENT;
      lus = SENT;
    }
    const localName = l.name === undefined ? name : bytesOf(l.name);
    push(
      new Bytes()
        .u32(l.signature ?? 0x04034b50)
        .u16(l.versionNeeded ?? versionNeeded)
        .u16(l.flags ?? flags)
        .u16(l.method ?? method)
        .u16(l.dosTime ?? dosTime)
        .u16(l.dosDate ?? dosDate)
        .u32(l.crc32 ?? (deferred ? 0 : crc))
        .u32(l.compressedSize ?? lcs)
        .u32(l.uncompressedSize ?? lus)
        .u16(localName.length)
        .u16(localExtra.length)
        .raw(localName)
        .raw(localExtra)
        .done(),
    );
    push(data);
    if (e.descriptor) {
      const d = e.descriptor;
      const b = new Bytes();
      if (d.signature ?? true) b.u32(0x08074b50);
      b.u32(d.crc32 ?? crc);
      if (d.zip64) b.u64(d.compressedSize ?? cs).u64(d.uncompressedSize ?? us);
      else b.u32(d.compressedSize ?? cs).u32(d.uncompressedSize ?? us);
      push(b.done());
    }
    if (e.after) push(e.after);
    // Central record.
    const lho = e.localHeaderOffset ?? offset;
    const z64 = e.zip64?.central ?? [];
    const slots = new Bytes();
    if (z64.includes('uncompressedSize')) slots.u64(us);
    if (z64.includes('compressedSize')) slots.u64(cs);
    if (z64.includes('localHeaderOffset')) slots.u64(lho);
    const z64data = slots.done();
    const extra = concat([
      e.extra ?? new Uint8Array(0),
      z64.length ? extraRecord(1, z64data) : new Uint8Array(0),
    ]);
    const comment = e.comment ?? new Uint8Array(0);
    records.push(
      new Bytes()
        .u32(e.centralSignature ?? 0x02014b50)
        .u16(e.versionMadeBy ?? 0x031e)
        .u16(versionNeeded)
        .u16(flags)
        .u16(method)
        .u16(dosTime)
        .u16(dosDate)
        .u32(crc)
        .u32(z64.includes('compressedSize') ? SENT : cs)
        .u32(z64.includes('uncompressedSize') ? SENT : us)
        .u16(name.length)
        .u16(extra.length)
        .u16(comment.length)
        .u16(e.diskStart ?? 0)
        .u16(e.internalAttributes ?? 0)
        .u32(e.externalAttributes ?? 0o100644 * 0x10000)
        .u32(z64.includes('localHeaderOffset') ? SENT : lho)
        .raw(name)
        .raw(extra)
        .raw(comment)
        .done(),
    );
  }
  for (const i of z.centralOrder ?? z.entries.map((_, i) => i)) central.push(records[i]!);
  if (z.centralTrailer) central.push(z.centralTrailer);
  const cdOffset = pos;
  const cd = concat(central);
  push(cd);
  if (z.afterCentral) push(z.afterCentral);
  const count = z.entries.length;
  const e = z.eocd ?? {};
  const comment = z.comment ?? new Uint8Array(0);
  const y = z.zip64End;
  if (y) {
    const extensible = y.extensible ?? new Uint8Array(0);
    const recordOffset = pos;
    push(
      new Bytes()
        .u32(y.signature ?? 0x06064b50)
        .u64(y.recordSize ?? 44 + extensible.length)
        .u16(45)
        .u16(45)
        .u32(y.diskNumber ?? 0)
        .u32(y.centralDirectoryDisk ?? 0)
        .u64(y.entriesOnDisk ?? count)
        .u64(y.totalEntries ?? count)
        .u64(y.centralDirectorySize ?? cd.length)
        .u64(y.centralDirectoryOffset ?? cdOffset)
        .raw(extensible)
        .done(),
    );
    push(
      new Bytes()
        .u32(y.locatorSignature ?? 0x07064b50)
        .u32(y.locatorDisk ?? 0)
        .u64(y.locatorOffset ?? recordOffset)
        .u32(y.locatorTotalDisks ?? 1)
        .done(),
    );
  }
  const s16 = y?.sentinels ? 0xffff : undefined;
  const s32 = y?.sentinels ? SENT : undefined;
  push(
    new Bytes()
      .u32(e.signature ?? 0x06054b50)
      .u16(e.diskNumber ?? 0)
      .u16(e.centralDirectoryDisk ?? 0)
      .u16(e.entriesOnDisk ?? s16 ?? count)
      .u16(e.totalEntries ?? s16 ?? count)
      .u32(e.centralDirectorySize ?? s32 ?? cd.length)
      .u32(e.centralDirectoryOffset ?? s32 ?? cdOffset)
      .u16(e.commentLength ?? comment.length)
      .raw(comment)
      .done(),
  );
  if (z.trailing) push(z.trailing);
  return concat(parts);
}
