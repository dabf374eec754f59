/**
 * Small, valid, deterministic PE32 (x86) / PE32+ (x64) images written from scratch, for sample
 * releases and tests: DOS header + stub, COFF header, optional header with 16 data directories, a
 * `.text` section with a real entry point and an `.rdata` section carrying a label and `payload`.
 * No imports and no relocations are needed: the code uses no absolute addresses.
 */
import { UsageError } from '../../errors.js';
import { computeChecksum } from './checksum.js';
import type { PeErrorCode } from './types.js';

function optionError(code: Extract<PeErrorCode, 'PE_SYNTH_BAD_OPTION'>, message: string): UsageError {
  return new UsageError(code, message);
}

export interface BuildPeOptions {
  arch: 'x86' | 'x64';
  kind?: 'exe' | 'dll';
  /** Bytes stored in `.rdata` (so each locale's file can differ). */
  payload?: Uint8Array;
  /** A label stored in `.rdata` before the payload. */
  name?: string;
}

const FILE_ALIGNMENT = 0x200;
const SECTION_ALIGNMENT = 0x1000;
const PE_OFFSET = 0x80;
const HEADERS_SIZE = 0x200;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

// The DOS stub: push cs; pop ds; mov dx, msg; mov ah, 9; int 21h; mov ax, 4C01h; int 21h; msg.
const DOS_CODE = [0x0e, 0x1f, 0xba, 0x0e, 0x00, 0xb4, 0x09, 0xcd, 0x21, 0xb8, 0x01, 0x4c, 0xcd, 0x21];
const DOS_MESSAGE = 'marsign synthetic PE; needs Windows.\r\r\n$';

/** Entry points: exe `xor eax, eax; ret`; DLL `mov eax, 1` then `ret 12` (stdcall DllMain) / `ret`. */
function entryCode(arch: 'x86' | 'x64', kind: 'exe' | 'dll'): number[] {
  if (kind === 'exe') return [0x31, 0xc0, 0xc3];
  return arch === 'x86'
    ? [0xb8, 0x01, 0x00, 0x00, 0x00, 0xc2, 0x0c, 0x00]
    : [0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3];
}

export function buildPe(options: BuildPeOptions): Uint8Array {
  const { arch } = options;
  const kind = options.kind ?? 'exe';
  if (arch !== 'x86' && arch !== 'x64')
    throw optionError('PE_SYNTH_BAD_OPTION', `options.arch must be 'x86' or 'x64', got ${String(arch)}`);
  if (kind !== 'exe' && kind !== 'dll')
    throw optionError('PE_SYNTH_BAD_OPTION', `options.kind must be 'exe' or 'dll', got ${String(kind)}`);
  const plus = arch === 'x64';
  const label = new TextEncoder().encode(`marsign synthetic ${arch} ${kind}: ${options.name ?? ''}\0`);
  const payload = options.payload ?? new Uint8Array(0);
  const rdataSize = label.length + payload.length;
  const code = entryCode(arch, kind);

  const textRaw = FILE_ALIGNMENT;
  const rdataRaw = align(rdataSize, FILE_ALIGNMENT);
  const textRva = SECTION_ALIGNMENT;
  const rdataRva = 2 * SECTION_ALIGNMENT;
  const sizeOfImage = rdataRva + align(rdataSize, SECTION_ALIGNMENT);
  const total = HEADERS_SIZE + textRaw + rdataRaw;
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  const u8 = (at: number, x: number): void => v.setUint8(at, x);
  const u16 = (at: number, x: number): void => v.setUint16(at, x, true);
  const u32 = (at: number, x: number): void => v.setUint32(at, x, true);
  const u64 = (at: number, x: bigint): void => v.setBigUint64(at, x, true);

  // DOS header (IMAGE_DOS_HEADER, 64 bytes): a minimal valid DOS program header.
  u16(0x00, 0x5a4d); // e_magic "MZ"
  u16(0x02, 0x90); // e_cblp: bytes on last page
  u16(0x04, 3); // e_cp: pages
  u16(0x08, 4); // e_cparhdr: header paragraphs (64 bytes)
  u16(0x0c, 0xffff); // e_maxalloc
  u16(0x10, 0xb8); // e_sp
  u16(0x18, 0x40); // e_lfarlc
  u32(0x3c, PE_OFFSET); // e_lfanew
  out.set(DOS_CODE, 0x40);
  out.set(new TextEncoder().encode(DOS_MESSAGE), 0x40 + DOS_CODE.length);

  // "PE\0\0" + COFF header
  const pe = PE_OFFSET;
  u32(pe, 0x4550);
  u16(pe + 4, plus ? 0x8664 : 0x014c); // Machine
  u16(pe + 6, 2); // NumberOfSections
  u32(pe + 8, 0); // TimeDateStamp: 0 keeps the output deterministic
  const optSize = plus ? 240 : 224;
  u16(pe + 20, optSize);
  // EXECUTABLE_IMAGE | (x86: 32BIT_MACHINE, x64: LARGE_ADDRESS_AWARE) | DLL
  u16(pe + 22, 0x0002 | (plus ? 0x0020 : 0x0100) | (kind === 'dll' ? 0x2000 : 0));

  // Optional header
  const o = pe + 24;
  u16(o, plus ? 0x20b : 0x10b);
  u8(o + 2, 14); // linker version 14.0
  u32(o + 4, textRaw); // SizeOfCode
  u32(o + 8, rdataRaw); // SizeOfInitializedData
  u32(o + 16, textRva); // AddressOfEntryPoint
  u32(o + 20, textRva); // BaseOfCode
  if (plus) u64(o + 24, kind === 'dll' ? 0x1_8000_0000n : 0x1_4000_0000n);
  else {
    u32(o + 24, rdataRva); // BaseOfData
    u32(o + 28, kind === 'dll' ? 0x1000_0000 : 0x40_0000); // ImageBase
  }
  u32(o + 32, SECTION_ALIGNMENT);
  u32(o + 36, FILE_ALIGNMENT);
  u16(o + 40, 6); // MajorOperatingSystemVersion
  u16(o + 48, 6); // MajorSubsystemVersion
  u32(o + 56, sizeOfImage);
  u32(o + 60, HEADERS_SIZE);
  // o + 64 CheckSum, written last
  u16(o + 68, kind === 'dll' ? 2 : 3); // Subsystem: WINDOWS_GUI / WINDOWS_CUI
  u16(o + 70, 0x0100); // DllCharacteristics: NX_COMPAT
  if (plus) {
    u64(o + 72, 0x10_0000n); // SizeOfStackReserve
    u64(o + 80, 0x1000n); // SizeOfStackCommit
    u64(o + 88, 0x10_0000n); // SizeOfHeapReserve
    u64(o + 96, 0x1000n); // SizeOfHeapCommit
    u32(o + 108, 16); // NumberOfRvaAndSizes
  } else {
    u32(o + 72, 0x10_0000);
    u32(o + 76, 0x1000);
    u32(o + 80, 0x10_0000);
    u32(o + 84, 0x1000);
    u32(o + 92, 16);
  }
  // 16 data directories stay zero: no imports, exports, relocations or certificate table yet.

  // Section headers
  const sh = o + optSize;
  const section = (
    at: number,
    name: string,
    vsize: number,
    rva: number,
    rawSize: number,
    rawPtr: number,
    ch: number,
  ): void => {
    out.set(new TextEncoder().encode(name), at);
    u32(at + 8, vsize);
    u32(at + 12, rva);
    u32(at + 16, rawSize);
    u32(at + 20, rawPtr);
    u32(at + 36, ch);
  };
  section(sh, '.text', code.length, textRva, textRaw, HEADERS_SIZE, 0x6000_0020); // CODE | EXECUTE | READ
  section(sh + 40, '.rdata', rdataSize, rdataRva, rdataRaw, HEADERS_SIZE + textRaw, 0x4000_0040); // INITIALIZED_DATA | READ

  out.set(code, HEADERS_SIZE);
  out.set(label, HEADERS_SIZE + textRaw);
  out.set(payload, HEADERS_SIZE + textRaw + label.length);
  u32(o + 64, computeChecksum(out, o + 64));
  return out;
}
