import { UsageError } from '../src/errors.js';
import type { CacheErrorCode } from './errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  // Bare letters are binary, as in du, docker and systemd: "500M" is 500 MiB.
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  // Explicit SI units are decimal.
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
};

/**
 * Parse a size such as `1024`, `500M`, `2G`, `1.5GiB` or `300MB` into bytes (rounded down).
 * K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024; KB/MB/GB/TB are powers of 1000.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(String(text));
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new UsageError(
      'BAD_SIZE' satisfies CacheErrorCode,
      `cannot parse size ${JSON.stringify(text)}: expected a number with an optional unit (K, M, G, T, KiB…, KB…), e.g. 500M`,
    );
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes))
    throw new UsageError('BAD_SIZE' satisfies CacheErrorCode, `size ${JSON.stringify(text)} is too large`);
  return bytes;
}

/** A byte count for people: `1.5 GiB`, `512 B`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
