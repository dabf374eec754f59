/**
 * PE32 / PE32+ header reader (Microsoft PE/COFF specification; offsets as used by osslsigncode
 * `pe.c` `pe_ctx_get` and jsign `PEFile`). Only what signing needs is read: the checksum and
 * certificate-table locations, the table itself, and the section headers for information.
 */
import { FormatError } from '../../errors.js';
import { Cursor } from '../cursor.js';
import {
  WIN_CERT_REVISION_2_0,
  WIN_CERT_TYPE_PKCS_SIGNED_DATA,
  type CertificateEntry,
  type PeErrorCode,
  type PeInfo,
  type PeSection,
} from './types.js';

/** Most WIN_CERTIFICATE entries read from one table (real files have 1; shim EFI builds have 2). */
export const MAX_CERT_ENTRIES = 16;
/** Largest e_lfanew followed: the loader rejects headers beyond this too (and it bounds the search). */
export const MAX_PE_HEADER_OFFSET = 0x1000_0000;

const FORMAT = 'pe';
const MZ = 0x5a4d;
const PE_SIGNATURE = 0x0000_4550; // "PE\0\0"
export const MAGIC_PE32 = 0x10b;
export const MAGIC_PE32_PLUS = 0x20b;
const CERT_DIRECTORY_INDEX = 4;

function err(
  code: Exclude<PeErrorCode, 'PE_SYNTH_BAD_OPTION'>,
  message: string,
  offset?: number,
): FormatError {
  return new FormatError(FORMAT, code, message, offset);
}

/** Cheap sniff: `MZ`, an in-bounds e_lfanew and the `PE\0\0` signature. Never throws. */
export function isPe(bytes: Uint8Array): boolean {
  if (bytes.length < 0x40 || bytes[0] !== 0x4d || bytes[1] !== 0x5a) return false;
  const lfanew = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0x3c, true);
  if (lfanew + 24 > bytes.length) return false;
  return (
    bytes[lfanew] === 0x50 && bytes[lfanew + 1] === 0x45 && bytes[lfanew + 2] === 0 && bytes[lfanew + 3] === 0
  );
}

export function parsePe(bytes: Uint8Array): PeInfo {
  const c = new Cursor(bytes, FORMAT, 0, 'PE_TRUNCATED' satisfies PeErrorCode);
  if (bytes.length < 2 || c.u16le() !== MZ) {
    const found = Buffer.from(bytes.subarray(0, 2)).toString('hex');
    throw err('PE_NOT_PE', `no MZ signature (found 0x${found || 'empty'})`, 0);
  }
  if (bytes.length < 0x40)
    throw err('PE_TRUNCATED', `DOS header needs 64 bytes, file has ${bytes.length}`, 0);
  // 0x3C e_lfanew: file offset of the PE signature
  const peOffset = c.seek(0x3c).u32le();
  if (peOffset < 0x40 || peOffset > MAX_PE_HEADER_OFFSET)
    throw err('PE_NOT_PE', `e_lfanew ${peOffset} is not a plausible PE header offset`, 0x3c);
  if (peOffset + 4 > bytes.length)
    throw err(
      'PE_TRUNCATED',
      `e_lfanew ${peOffset} points past the end of the ${bytes.length}-byte file`,
      0x3c,
    );
  const sig = c.seek(peOffset).u32le();
  if (sig !== PE_SIGNATURE) throw err('PE_NOT_PE', `no PE signature (found 0x${sig.toString(16)})`, peOffset);

  // COFF file header (20 bytes)
  const machine = c.u16le();
  const numberOfSections = c.u16le();
  c.skip(4 + 4 + 4); // TimeDateStamp, PointerToSymbolTable, NumberOfSymbols
  const sizeOfOptionalHeader = c.u16le();
  const characteristics = c.u16le();

  const optStart = peOffset + 24;
  const magic = c.u16le();
  if (magic !== MAGIC_PE32 && magic !== MAGIC_PE32_PLUS)
    throw err(
      'PE_UNSUPPORTED_MAGIC',
      `optional header magic 0x${magic.toString(16)} is neither PE32 nor PE32+`,
      optStart,
    );
  const pe32plus = magic === MAGIC_PE32_PLUS;
  const wide = pe32plus ? 16 : 0;

  // Offsets from the optional header start, identical in PE32 and PE32+ up to CheckSum (+64).
  const sizeOfHeaders = c.seek(optStart + 60).u32le();
  const checksumOffset = optStart + 64;
  const checksum = c.u32le();
  const subsystem = c.u16le();
  const nrsOffset = optStart + 92 + wide;
  const numberOfRvaAndSizes = c.seek(nrsOffset).u32le();
  if (numberOfRvaAndSizes <= CERT_DIRECTORY_INDEX)
    throw err(
      'PE_NO_CERT_DIRECTORY',
      `NumberOfRvaAndSizes is ${numberOfRvaAndSizes}: no certificate table directory entry (needs at least 5)`,
      nrsOffset,
    );
  const certDirOffset = nrsOffset + 4 + CERT_DIRECTORY_INDEX * 8;
  if (certDirOffset + 8 > optStart + sizeOfOptionalHeader)
    throw err(
      'PE_NO_CERT_DIRECTORY',
      `SizeOfOptionalHeader ${sizeOfOptionalHeader} does not cover the certificate table directory entry`,
      certDirOffset,
    );
  const tableOffset = c.seek(certDirOffset).u32le();
  const tableSize = c.u32le();

  const sectionTable = optStart + sizeOfOptionalHeader;
  if (sectionTable + numberOfSections * 40 > bytes.length)
    throw err(
      'PE_TRUNCATED',
      `${numberOfSections} section headers run past the end of the file`,
      sectionTable,
    );
  const sections: PeSection[] = [];
  c.seek(sectionTable);
  for (let i = 0; i < numberOfSections; i++) {
    const nameBytes = c.bytesView(8);
    const nul = nameBytes.indexOf(0);
    const name = Buffer.from(nameBytes.subarray(0, nul < 0 ? 8 : nul)).toString('latin1');
    const virtualSize = c.u32le();
    const virtualAddress = c.u32le();
    const sizeOfRawData = c.u32le();
    const pointerToRawData = c.u32le();
    c.skip(12); // relocations/line numbers pointers and counts
    sections.push({
      name,
      virtualSize,
      virtualAddress,
      sizeOfRawData,
      pointerToRawData,
      characteristics: c.u32le(),
    });
  }

  const info: PeInfo = {
    peOffset,
    pe32plus,
    machine,
    characteristics,
    subsystem,
    sizeOfHeaders,
    checksumOffset,
    checksum,
    numberOfRvaAndSizes,
    certDirOffset,
    sections,
    fileSize: bytes.length,
  };
  // A zero Size means "no table" whatever VirtualAddress says (osslsigncode pe_ctx_get does the same).
  if (tableSize !== 0) {
    if (tableOffset < sectionTable + numberOfSections * 40 || tableSize < 8)
      throw err(
        'PE_BAD_CERT_TABLE',
        `certificate table at ${tableOffset} size ${tableSize} overlaps the headers`,
        certDirOffset,
      );
    if (tableOffset + tableSize > bytes.length)
      throw err(
        'PE_BAD_CERT_TABLE',
        `certificate table at ${tableOffset} size ${tableSize} runs ${tableOffset + tableSize - bytes.length} bytes past EOF`,
        certDirOffset,
      );
    // Since MS12-024 the signature must be the last thing in the file (osslsigncode pe_ctx_get,
    // jsign writeCertificateTable): anything after it is unsigned data we refuse to keep or hash.
    if (tableOffset + tableSize !== bytes.length)
      throw err(
        'PE_CERT_TABLE_NOT_AT_EOF',
        `certificate table at ${tableOffset} size ${tableSize} ends ${bytes.length - tableOffset - tableSize} bytes before EOF`,
        certDirOffset,
      );
    info.certTable = { offset: tableOffset, size: tableSize };
  }
  return info;
}

/**
 * The WIN_CERTIFICATE entries of the table. Each dwLength is rounded up to 8 to find the next entry,
 * and the rounded lengths must add up to the directory Size (osslsigncode pe_check_file), which
 * accepts both the padded (osslsigncode, jsign) and the unpadded (winsign) dwLength convention.
 */
export function readCertificateTable(bytes: Uint8Array, info: PeInfo): CertificateEntry[] {
  const t = info.certTable;
  if (!t) return [];
  const c = new Cursor(
    bytes.subarray(t.offset, t.offset + t.size),
    FORMAT,
    t.offset,
    'PE_BAD_CERT_TABLE' satisfies PeErrorCode,
  );
  const out: CertificateEntry[] = [];
  while (c.remaining > 0) {
    if (out.length >= MAX_CERT_ENTRIES)
      throw err('PE_BAD_CERT_TABLE', `more than ${MAX_CERT_ENTRIES} certificate entries`, c.fileOffset);
    const offset = c.fileOffset;
    const length = c.u32le();
    const revision = c.u16le();
    const certificateType = c.u16le();
    const padded = (length + 7) & ~7;
    if (length < 8 || padded - 8 > c.remaining)
      throw err(
        'PE_BAD_CERT_TABLE',
        `WIN_CERTIFICATE dwLength ${length} does not fit the ${t.size}-byte table`,
        offset,
      );
    const data = c.bytesView(length - 8);
    c.skip(padded - length);
    out.push({ offset, length, revision, certificateType, data });
  }
  return out;
}

/** The first PKCS#7 SignedData entry (rev 2.0, type PKCS_SIGNED_DATA), as Windows and osslsigncode read it. */
export function findSignedData(entries: readonly CertificateEntry[]): CertificateEntry | undefined {
  return entries.find(
    (e) => e.revision === WIN_CERT_REVISION_2_0 && e.certificateType === WIN_CERT_TYPE_PKCS_SIGNED_DATA,
  );
}
