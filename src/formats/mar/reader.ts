import type { ByteSource } from '../../io/byte-source.js';
import { Cursor } from '../cursor.js';
import { decodeEntryName } from './names.js';
import {
  MAR_ADDITIONAL_ID_PRODUCT_INFO,
  MAR_FORMAT,
  MAR_MAGIC,
  MAR_MAX_ADDITIONAL_SECTIONS,
  MAR_MAX_ADDITIONAL_SECTION_SIZE,
  MAR_MAX_CHANNEL_LENGTH,
  MAR_MAX_ENTRIES,
  MAR_MAX_FILE_SIZE,
  MAR_MAX_INDEX_SIZE,
  MAR_MAX_PRODUCT_INFO_DATA,
  MAR_MAX_SIGNATURES,
  MAR_MAX_SIGNATURE_LENGTH,
  MAR_MAX_VERSION_LENGTH,
  MAR_MIN_FILE_SIZE,
  MAR_OLD_STYLE_DATA_START,
  MAR_PADDED_PRODUCT_INFO_SIZE,
  MAR_SIGNATURE_ALGORITHMS,
  MAR_SIGNATURE_BLOCK_OFFSET,
  marError,
  type MarAdditionalSection,
  type MarEntry,
  type MarErrorCode,
  type MarInfo,
  type MarSignatureInfo,
  type ProductInfo,
  type ReadMarOptions,
} from './types.js';

/** Bytes at [offset, offset+length), or a typed error if that range is outside the file. */
async function readRange(
  source: ByteSource,
  offset: number,
  length: number,
  code: MarErrorCode,
  what: string,
): Promise<Uint8Array> {
  if (offset < 0 || length < 0 || offset + length > source.size)
    throw marError(code, `${what} [${offset}, +${length}) is outside the ${source.size}-byte file`, offset);
  return source.read(offset, length);
}

/**
 * Parse and validate a MAR: header, signature block, additional sections, index
 * (mar-format.md §2-7, every check of §11.1-7). Reads only the header and the index (positioned reads);
 * entry data is read on demand with readEntryBytes.
 */
export async function readMar(source: ByteSource, options: ReadMarOptions = {}): Promise<MarInfo> {
  const size = source.size;
  if (size > MAR_MAX_FILE_SIZE)
    throw marError('MAR_TOO_LARGE', `file is ${size} bytes, more than the ${MAR_MAX_FILE_SIZE}-byte limit`);
  if (size < MAR_MIN_FILE_SIZE) {
    if (size >= 4 && new Cursor(await source.read(0, 4), MAR_FORMAT).u32be() !== MAR_MAGIC)
      throw marError('MAR_BAD_MAGIC', 'not a MAR file (no "MAR1" magic)', 0);
    throw marError('MAR_TRUNCATED', `file is only ${size} bytes`, 0);
  }

  // 0x00 magic, 0x04 u32 offset_to_index
  const head = new Cursor(await source.read(0, 8), MAR_FORMAT, 0, 'MAR_TRUNCATED');
  const magic = head.u32be();
  if (magic !== MAR_MAGIC)
    throw marError('MAR_BAD_MAGIC', `bad magic 0x${magic.toString(16).padStart(8, '0')}, expected "MAR1"`, 0);
  const indexOffset = head.u32be();

  const { entries, indexEnd } = await readIndex(source, indexOffset, options);
  // Before anything follows an entry offset (the header parse reads up to the lowest one): every
  // entry must end before the index, which is inside the file.
  for (const e of entries) {
    if (e.offset + e.size > indexOffset)
      throw marError(
        'MAR_ENTRY_OUT_OF_BOUNDS',
        `entry ${JSON.stringify(e.name)} [${e.offset}, +${e.size}) runs past the index at ${indexOffset}`,
        e.offset,
      );
  }

  // Peers tell the layouts apart by the first index record's offset (§7).
  const style = entries[0]!.offset === MAR_OLD_STYLE_DATA_START ? 'old' : 'modern';
  const dataStart = entries.reduce((m, e) => Math.min(m, e.offset), Number.MAX_SAFE_INTEGER);

  const info: MarInfo = {
    style,
    fileSize: size,
    indexOffset,
    signatures: [],
    hasAdditionalHeader: false,
    additionalSections: [],
    entries,
    dataStart,
  };
  if (style === 'modern') await readModernHeader(source, info, options);
  else if (dataStart < MAR_OLD_STYLE_DATA_START)
    throw marError('MAR_ENTRY_OUT_OF_BOUNDS', `entry starts at ${dataStart}, inside the header`, dataStart);

  if (indexEnd !== size && !options.allowSizeMismatch)
    throw marError('MAR_TRAILING_BYTES', `${size - indexEnd} bytes follow the index`, indexEnd);

  checkEntryRanges(info);
  return info;
}

async function readIndex(
  source: ByteSource,
  indexOffset: number,
  options: ReadMarOptions,
): Promise<{ entries: MarEntry[]; indexEnd: number }> {
  const sizeBytes = await readRange(source, indexOffset, 4, 'MAR_INDEX_OUT_OF_BOUNDS', 'index size field');
  const indexSize = new Cursor(sizeBytes, MAR_FORMAT, indexOffset).u32be();
  if (indexSize > MAR_MAX_INDEX_SIZE)
    throw marError(
      'MAR_INDEX_TOO_LARGE',
      `index of ${indexSize} bytes exceeds ${MAR_MAX_INDEX_SIZE}`,
      indexOffset,
    );
  const bytes = await readRange(source, indexOffset + 4, indexSize, 'MAR_INDEX_OUT_OF_BOUNDS', 'index');
  if (indexSize === 0) throw marError('MAR_EMPTY_INDEX', 'the index has no entries', indexOffset);

  // Records are parsed until exactly index_size bytes are used (libmar mar_read_index); anything
  // that runs past the end (a number, a name without its NUL) means index_size is wrong.
  const c = new Cursor(bytes, MAR_FORMAT, indexOffset + 4, 'MAR_INDEX_SIZE_MISMATCH');
  const entries: MarEntry[] = [];
  const seen = new Set<string>();
  while (c.remaining > 0) {
    if (entries.length >= MAR_MAX_ENTRIES)
      throw marError('MAR_TOO_MANY_ENTRIES', `more than ${MAR_MAX_ENTRIES} entries`, c.fileOffset);
    const recordAt = c.fileOffset;
    if (c.remaining < 14)
      throw marError(
        'MAR_INDEX_SIZE_MISMATCH',
        `${c.remaining} bytes left in the index, too few for a record (index_size ${indexSize})`,
        recordAt,
      );
    const offset = c.u32be();
    const size = c.u32be();
    const flags = c.u32be();
    const nameAt = c.fileOffset;
    const raw = c.cstring(c.remaining, 'MAR_INDEX_SIZE_MISMATCH');
    const name = decodeEntryName(raw, nameAt, options.allowUnsafeNames);
    if (seen.has(name))
      throw marError('MAR_DUPLICATE_NAME', `duplicate entry name ${JSON.stringify(name)}`, nameAt);
    seen.add(name);
    entries.push({ name, offset, size, flags });
  }
  return { entries, indexEnd: indexOffset + 4 + indexSize };
}

async function readModernHeader(source: ByteSource, info: MarInfo, options: ReadMarOptions): Promise<void> {
  const { dataStart } = info;
  if (dataStart < MAR_SIGNATURE_BLOCK_OFFSET + 4)
    throw marError(
      'MAR_ENTRY_OUT_OF_BOUNDS',
      `entry data starts at ${dataStart}, inside the header`,
      dataStart,
    );
  // The header region [8, dataStart) is small in a valid file (≤ 20 + 8·2056 + sections); read it
  // piecewise so a hostile dataStart cannot make us read much.
  const hdr = new Cursor(await source.read(8, 12), MAR_FORMAT, 8, 'MAR_TRUNCATED');
  // 0x08 u64 file_size (whole file, signatures included)
  const declaredHigh = hdr.u32be();
  const declaredLow = hdr.u32be();
  const declared = declaredHigh * 2 ** 32 + declaredLow;
  // 0x10 u32 num_signatures
  const count = hdr.u32be();
  info.declaredFileSize = declared;
  if (count > MAR_MAX_SIGNATURES)
    throw marError('MAR_TOO_MANY_SIGNATURES', `${count} signatures, more than ${MAR_MAX_SIGNATURES}`, 16);
  // Even a lenient reader refuses a size no MAR may have (it is not a one-byte append).
  if (declared !== info.fileSize && (!options.allowSizeMismatch || declared > MAR_MAX_FILE_SIZE))
    throw marError(
      'MAR_FILE_SIZE_MISMATCH',
      `file_size field says ${declared} bytes, the file has ${info.fileSize}`,
      8,
    );

  let pos = MAR_SIGNATURE_BLOCK_OFFSET + 4;
  const headerBytes = async (n: number, what: string): Promise<Cursor> => {
    if (pos + n > dataStart)
      throw marError(
        'MAR_HEADER_OUT_OF_BOUNDS',
        `${what} at ${pos} runs into entry data at ${dataStart}`,
        pos,
      );
    const c = new Cursor(await source.read(pos, n), MAR_FORMAT, pos, 'MAR_TRUNCATED');
    pos += n;
    return c;
  };

  for (let i = 0; i < count; i++) {
    const at = pos;
    const c = await headerBytes(8, `signature ${i} header`);
    const algorithmId = c.u32be();
    const length = c.u32be();
    if (!(algorithmId in MAR_SIGNATURE_ALGORITHMS))
      throw marError(
        'MAR_UNKNOWN_SIGNATURE_ALGORITHM',
        `signature ${i} has unknown algorithm id ${algorithmId}`,
        at,
      );
    if (length > MAR_MAX_SIGNATURE_LENGTH)
      throw marError(
        'MAR_SIGNATURE_TOO_LARGE',
        `signature ${i} is ${length} bytes, more than ${MAR_MAX_SIGNATURE_LENGTH}`,
        at + 4,
      );
    if (pos + length > dataStart)
      throw marError(
        'MAR_HEADER_OUT_OF_BOUNDS',
        `signature ${i} at ${pos} runs into entry data at ${dataStart}`,
        pos,
      );
    info.signatures.push({ algorithmId, length, offset: pos } satisfies MarSignatureInfo);
    pos += length;
  }

  // §4.3: the count field is present unless the data starts right after the signatures (mardor _has_extras).
  if (pos === dataStart) return;
  info.hasAdditionalHeader = true;
  const countAt = pos;
  const sections = (await headerBytes(4, 'additional-section count')).u32be();
  if (sections > MAR_MAX_ADDITIONAL_SECTIONS)
    throw marError(
      'MAR_TOO_MANY_ADDITIONAL_SECTIONS',
      `${sections} additional sections, more than ${MAR_MAX_ADDITIONAL_SECTIONS}`,
      countAt,
    );
  for (let i = 0; i < sections; i++) {
    const at = pos;
    const c = await headerBytes(8, `additional section ${i} header`);
    const blockSize = c.u32be();
    const id = c.u32be();
    if (blockSize < 8 || blockSize > MAR_MAX_ADDITIONAL_SECTION_SIZE)
      throw marError('MAR_ADDITIONAL_SECTION_INVALID', `additional section ${i} has size ${blockSize}`, at);
    const dataLen = blockSize - 8;
    if (pos + dataLen > dataStart)
      throw marError(
        'MAR_HEADER_OUT_OF_BOUNDS',
        `additional section ${i} (${blockSize} bytes) runs into entry data at ${dataStart}`,
        at,
      );
    const section: MarAdditionalSection = { id, offset: at, size: blockSize };
    if (id === MAR_ADDITIONAL_ID_PRODUCT_INFO) {
      if (info.productInfo)
        throw marError('MAR_PRODUCT_INFO_INVALID', 'more than one product-information block', at);
      if (dataLen > MAR_MAX_PRODUCT_INFO_DATA)
        throw marError(
          'MAR_PRODUCT_INFO_INVALID',
          `product-information block of ${blockSize} bytes exceeds ${MAR_PADDED_PRODUCT_INFO_SIZE}`,
          at,
        );
      info.productInfo = parseProductInfo(await source.read(pos, dataLen), pos);
    }
    info.additionalSections.push(section);
    pos += dataLen;
  }
  if (pos !== dataStart)
    throw marError(
      'MAR_UNREFERENCED_BYTES',
      `${dataStart - pos} unused bytes between the header and the entry data`,
      pos,
    );
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

function parseProductInfo(data: Uint8Array, at: number): ProductInfo & { padded: boolean } {
  const c = new Cursor(data, MAR_FORMAT, at, 'MAR_PRODUCT_INFO_INVALID');
  const channelBytes = c.cstring(MAR_MAX_CHANNEL_LENGTH, 'MAR_PRODUCT_INFO_INVALID');
  const versionBytes = c.cstring(MAR_MAX_VERSION_LENGTH, 'MAR_PRODUCT_INFO_INVALID');
  const padding = c.bytesView(c.remaining);
  if (padding.some((b) => b !== 0))
    throw marError('MAR_PRODUCT_INFO_INVALID', 'non-zero bytes in product-information padding', c.fileOffset);
  const channel = new TextDecoder().decode(channelBytes);
  const version = new TextDecoder().decode(versionBytes);
  if (!PRINTABLE_ASCII.test(channel) || !PRINTABLE_ASCII.test(version))
    throw marError('MAR_PRODUCT_INFO_INVALID', 'product-information strings must be printable ASCII', at);
  return { channel, version, padded: padding.length > 0 };
}

/**
 * §11.4-5 (bounds were checked in readMar): non-empty entries do not overlap (libmar's
 * content-collision rule; zero-length entries may share offsets); and, as every writer lays entries out
 * back to back, the non-empty entries cover the data area exactly, so no bytes hide between them.
 */
function checkEntryRanges(info: MarInfo): void {
  const { entries, indexOffset, dataStart } = info;
  const ranges = entries.filter((e) => e.size > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur.offset < prev.offset + prev.size)
      throw marError(
        'MAR_ENTRY_OVERLAP',
        `entries ${JSON.stringify(prev.name)} [${prev.offset}, +${prev.size}) and ${JSON.stringify(cur.name)} [${cur.offset}, +${cur.size}) overlap`,
        cur.offset,
      );
  }
  let covered = dataStart;
  for (const r of ranges) {
    if (r.offset !== covered)
      throw marError(
        'MAR_UNREFERENCED_BYTES',
        `${r.offset - covered} bytes at ${covered} belong to no entry`,
        covered,
      );
    covered = r.offset + r.size;
  }
  if (covered !== indexOffset)
    throw marError(
      'MAR_UNREFERENCED_BYTES',
      `${indexOffset - covered} bytes at ${covered} belong to no entry`,
      covered,
    );
}

/** The raw stored bytes of one entry (compressed if the entry is). */
export async function readEntryBytes(source: ByteSource, entry: MarEntry): Promise<Uint8Array> {
  return readRange(
    source,
    entry.offset,
    entry.size,
    'MAR_ENTRY_OUT_OF_BOUNDS',
    `entry ${JSON.stringify(entry.name)}`,
  );
}
