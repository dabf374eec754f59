/**
 * One of several processes hammering one cache directory (driven by concurrency.test.ts).
 * Usage: node --import tsx stress-child.ts ROOT SECRET_HEX ID ITERATIONS MODE
 *   MODE rw: put/get shared and own keys; every payload served must equal payloadFor(key).
 *   MODE tamper: overwrite shared entries with damaged copies, in place and by rename.
 * Prints one JSON line: { wrong, hits, misses, corrupt, puts, ops }.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FsCacheStore } from '../../cache/fs-store.js';

export const SHARED_KEYS = 6;

export function keyFor(name: string): string {
  return createHash('sha256').update(name).digest('hex');
}

/** Deterministic content per key, 0..96 KiB, so concurrent writers of one key write the same bytes. */
export function payloadFor(key: string): Uint8Array {
  const size = parseInt(key.slice(0, 4), 16) % (96 * 1024);
  const out = new Uint8Array(size);
  let block = Buffer.from(key, 'hex');
  for (let i = 0; i < size; i += 32) {
    block = createHash('sha256').update(block).digest();
    out.set(block.subarray(0, Math.min(32, size - i)), i);
  }
  return out;
}

async function main(): Promise<void> {
  const [root, secretHex, id, iterations, mode] = process.argv.slice(2);
  if (!root || !secretHex || !id || !iterations || !mode)
    throw new Error('usage: ROOT SECRET_HEX ID ITERATIONS MODE');
  const store = new FsCacheStore({ root, hmacSecret: Buffer.from(secretHex, 'hex') });
  const shared = Array.from({ length: SHARED_KEYS }, (_, i) => keyFor(`shared-${i}`));
  const own = Array.from({ length: 4 }, (_, i) => keyFor(`own-${id}-${i}`));
  let wrong = 0;
  let ops = 0;
  for (let i = 0; i < Number(iterations); i++) {
    const r = randomBytes(2);
    const pool = r[0]! & 1 ? shared : own;
    const key = pool[r[1]! % pool.length]!;
    ops++;
    if (mode === 'tamper') {
      const path = store.entryPath(key);
      let bytes: Buffer;
      try {
        bytes = readFileSync(path);
      } catch {
        continue;
      }
      if (bytes.length === 0) continue;
      bytes[r[1]! % bytes.length]! ^= 1 << (r[0]! % 8);
      if (r[0]! & 2) writeFileSync(path, bytes);
      else {
        const tmp = `${path}.tamper-${process.pid}`;
        writeFileSync(tmp, bytes.subarray(0, r[0]! & 4 ? bytes.length : bytes.length >> 1));
        renameSync(tmp, path);
      }
      continue;
    }
    if (r[0]! & 6) {
      const got = await store.get(key);
      if (got === undefined) await store.put(key, payloadFor(key));
      else if (!Buffer.from(got.payload).equals(Buffer.from(payloadFor(key)))) wrong++;
    } else await store.put(key, payloadFor(key));
  }
  const s = await store.stats();
  process.stdout.write(
    JSON.stringify({ wrong, hits: s.hits, misses: s.misses, corrupt: s.corrupt, puts: s.puts, ops }) + '\n',
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
