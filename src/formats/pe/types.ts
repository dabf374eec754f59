/** Plain, readonly descriptions of a PE file (docs/ARCHITECTURE.md "PE and Authenticode"). */

export interface PeSection {
  /** Up to 8 bytes of the section name, NULs trimmed (latin1). */
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  characteristics: number;
}

export interface PeInfo {
  /** File offset of the `PE\0\0` signature (e_lfanew). */
  peOffset: number;
  /** Optional header magic 0x20B. */
  pe32plus: boolean;
  /** COFF Machine (0x14c i386, 0x8664 amd64, 0xaa64 arm64, ...). */
  machine: number;
  /** COFF Characteristics (0x2000 = DLL). */
  characteristics: number;
  /** Optional header Subsystem (10..13 are EFI images). */
  subsystem: number;
  sizeOfHeaders: number;
  /** File offset of the 4-byte CheckSum field (peOffset + 88 for both PE32 and PE32+). */
  checksumOffset: number;
  /** The CheckSum value stored in the file. */
  checksum: number;
  numberOfRvaAndSizes: number;
  /** File offset of data directory #4, the certificate table entry (8 bytes). */
  certDirOffset: number;
  /** The certificate table (a file range, ending at EOF) when the directory entry is non-empty. */
  certTable?: { offset: number; size: number };
  sections: readonly PeSection[];
  fileSize: number;
}

/** One WIN_CERTIFICATE in the certificate table. */
export interface CertificateEntry {
  /** File offset of the WIN_CERTIFICATE header. */
  offset: number;
  /** dwLength as stored (header + data, possibly + padding). */
  length: number;
  revision: number;
  certificateType: number;
  /** bCertificate, without the 8-byte header (may include trailing zero padding). */
  data: Uint8Array;
}

export type PeHash = 'sha256' | 'sha1';

/** Every code src/formats/pe raises (FormatError 'pe', except PE_SYNTH_BAD_OPTION: a UsageError). */
export type PeErrorCode =
  | 'PE_NOT_PE'
  | 'PE_TRUNCATED'
  | 'PE_UNSUPPORTED_MAGIC'
  | 'PE_NO_CERT_DIRECTORY'
  | 'PE_BAD_CERT_TABLE'
  | 'PE_CERT_TABLE_NOT_AT_EOF'
  | 'PE_SYNTH_BAD_OPTION';

export const WIN_CERT_REVISION_2_0 = 0x0200;
export const WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002;
