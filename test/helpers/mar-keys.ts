/**
 * Throwaway MAR signing keys and small MARs made here, for the tests that need *a* key or *a* MAR rather
 * than Mozilla's own (the byte-for-byte comparisons with Mozilla's signed MARs stay on ../shared).
 * Keys come from node:crypto; each key's self-signed certificate is made by the `openssl` CLI.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadPemKey, type SigningKey } from '../../src/keys/index.js';
import { MarWriter, type MarWriterOptions } from '../../src/mar/writer.js';
import { marSignatureSlots, signWriter, type MarAlgorithm } from '../../src/signing/mar-signer.js';

export interface MarTestKey {
  name: string;
  /** PKCS#8 PEM private key file. */
  keyPath: string;
  /** SPKI PEM public key file (`openssl dgst -verify`, `--mar-cert`). */
  pubPath: string;
  /** Self-signed X.509 certificate, DER (`--mar-cert`, like Mozilla's mycert.der). */
  certPath: string;
  key: SigningKey;
}

/** `bits` RSA keys named `k0`, `k1`, ... written to `dir` (2048-bit by default: quick to make). */
export function marTestKeys(dir: string, bits: number[]): MarTestKey[] {
  return bits.map((b, i) => {
    const name = `k${i}`;
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: b });
    const keyPath = join(dir, `${name}.TEST-ONLY.key.pem`);
    const pubPath = join(dir, `${name}.pub.pem`);
    const certPath = join(dir, `${name}.der`);
    writeFileSync(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    writeFileSync(pubPath, publicKey.export({ type: 'spki', format: 'pem' }));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-new',
        '-key',
        keyPath,
        '-subj',
        `/CN=marsign TEST-ONLY MAR ${name}`,
        '-days',
        '30',
        '-outform',
        'DER',
        '-out',
        certPath,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return { name, keyPath, pubPath, certPath, key: loadPemKey(readFileSync(keyPath)) };
  });
}

export interface TestMarEntry {
  name: string;
  data: Uint8Array;
  flags?: number;
}

const enc = new TextEncoder();

/** Three entries (text, 0-byte, 512 binary bytes) like libmar's multiple_file.mar, our own bytes. */
export const SAMPLE_ENTRIES: TestMarEntry[] = [
  { name: 'a.txt', data: enc.encode('hello\n'), flags: 0o644 },
  { name: 'dir/empty', data: new Uint8Array(0), flags: 0o644 },
  { name: 'dir/bin/data.bin', data: new Uint8Array(512).map((_, i) => (i * 7) & 0xff), flags: 0o755 },
];

/**
 * Write a modern MAR (product information `test-channel`/`1.0` unless `options` says otherwise) and sign it
 * with `keys` (none: unsigned, with an empty signature block like libmar's).
 */
export async function writeTestMar(
  path: string,
  opts: {
    keys?: SigningKey[];
    algorithm?: MarAlgorithm;
    entries?: TestMarEntry[];
    writer?: MarWriterOptions;
  } = {},
): Promise<string> {
  const keys = opts.keys ?? [];
  const algorithm = opts.algorithm ?? 'sha384';
  const w = await MarWriter.create(path, {
    productInfo: { channel: 'test-channel', version: '1.0' },
    signatureSlots: keys.length ? marSignatureSlots(keys, algorithm) : [],
    ...opts.writer,
  });
  for (const e of opts.entries ?? SAMPLE_ENTRIES) await w.addEntry(e.name, e.flags ?? 0o644, e.data);
  await w.finish();
  if (keys.length) await signWriter(w, keys, algorithm);
  await w.commit();
  return path;
}
