import { FormatError } from '../errors.js';

/** The cursor's own code; a truncation raises the code its caller names (`truncatedCode`). */
export type CursorErrorCode = 'VALUE_TOO_LARGE';

/**
 * A bounds-checked reader over a byte array (docs/ARCHITECTURE.md "Format code").
 * Every read returns a `subarray` view (no copy) or a number, and throws a FormatError with the
 * given format/code and the offset when it would run past the end.
 */
export class Cursor {
  private pos: number;

  constructor(
    readonly bytes: Uint8Array,
    readonly format: string,
    /** Absolute file offset of bytes[0], so errors report file offsets. */
    readonly base = 0,
    readonly truncatedCode = 'TRUNCATED',
  ) {
    this.pos = 0;
  }

  get offset(): number {
    return this.pos;
  }

  get fileOffset(): number {
    return this.base + this.pos;
  }

  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  seek(offset: number): this {
    if (offset < 0 || offset > this.bytes.length)
      this.fail(offset, `seek to ${offset} outside ${this.bytes.length} bytes`);
    this.pos = offset;
    return this;
  }

  skip(n: number): this {
    return this.seek(this.need(n) + n);
  }

  u8(): number {
    const at = this.need(1);
    this.pos += 1;
    return this.bytes[at]!;
  }

  u16le(): number {
    const at = this.need(2);
    this.pos += 2;
    return this.bytes[at]! | (this.bytes[at + 1]! << 8);
  }

  u32le(): number {
    const at = this.need(4);
    this.pos += 4;
    return this.view().getUint32(at, true);
  }

  u32be(): number {
    const at = this.need(4);
    this.pos += 4;
    return this.view().getUint32(at, false);
  }

  /** A u64 as a JS number; throws if it is not a safe integer. */
  u64be(): number {
    const at = this.need(8);
    this.pos += 8;
    const v = this.view().getBigUint64(at, false);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new FormatError(
        this.format,
        'VALUE_TOO_LARGE' satisfies CursorErrorCode,
        `u64 value ${v} is too large`,
        this.base + at,
      );
    }
    return Number(v);
  }

  bytesView(n: number): Uint8Array {
    const at = this.need(n);
    this.pos += n;
    return this.bytes.subarray(at, at + n);
  }

  /** Bytes up to (not including) the next NUL, which is consumed. Throws if there is no NUL. */
  cstring(maxLength: number, code = this.truncatedCode): Uint8Array {
    const start = this.pos;
    const limit = Math.min(this.bytes.length, start + maxLength + 1);
    const nul = this.bytes.subarray(start, limit).indexOf(0);
    if (nul < 0) {
      throw new FormatError(
        this.format,
        code,
        limit - start > maxLength
          ? `string longer than ${maxLength} bytes or not NUL-terminated`
          : 'string not NUL-terminated',
        this.base + start,
      );
    }
    this.pos = start + nul + 1;
    return this.bytes.subarray(start, start + nul);
  }

  private view(): DataView {
    return new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  private need(n: number): number {
    if (!Number.isInteger(n) || n < 0 || this.pos + n > this.bytes.length) {
      this.fail(this.pos, `need ${n} bytes, ${this.bytes.length - this.pos} left`);
    }
    return this.pos;
  }

  private fail(at: number, message: string): never {
    throw new FormatError(this.format, this.truncatedCode, message, this.base + at);
  }
}
