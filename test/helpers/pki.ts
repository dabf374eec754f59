/**
 * Test-only PKI: a throwaway CA (optionally an intermediate) and a code-signing certificate made with
 * the `openssl` CLI in a temp dir, and a SigningKey on node:crypto. Production keys live in src/keys/.
 */
import { execFile, execFileSync } from 'node:child_process';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  constants,
  privateEncrypt,
  type KeyObject,
} from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HashName, SigningKey } from '../../src/keys/types.js';

export interface TestPki {
  dir: string;
  caPemPath: string;
  caDer: Uint8Array;
  /** PEM of the signer certificate. */
  certPemPath: string;
  certDer: Uint8Array;
  keyPemPath: string;
  /** Signer certificate first, then the intermediate when there is one. */
  chainDer: Uint8Array[];
  key: SigningKey;
}

// DigestInfo prefixes (RFC 8017 9.2 note 1): SEQUENCE { AlgorithmIdentifier, OCTET STRING digest }.
const DIGEST_INFO: Record<HashName, string> = {
  sha1: '3021300906052b0e03021a05000414',
  sha256: '3031300d060960864801650304020105000420',
  sha384: '3041300d060960864801650304020205000430',
  sha512: '3051300d060960864801650304020305000440',
};

export function nodeSigningKey(privateKey: KeyObject): SigningKey {
  const publicKeyDer = new Uint8Array(createPublicKey(privateKey).export({ type: 'spki', format: 'der' }));
  const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  return {
    id: createHash('sha256').update(publicKeyDer).digest('hex'),
    type: 'rsa',
    bits,
    publicKeyDer,
    signDigest(hash: HashName, digest: Uint8Array): Promise<Uint8Array> {
      const di = Buffer.concat([Buffer.from(DIGEST_INFO[hash], 'hex'), digest]);
      return Promise.resolve(
        new Uint8Array(privateEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_PADDING }, di)),
      );
    },
  };
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function pemToDer(path: string): Uint8Array {
  const pem = readFileSync(path, 'latin1');
  const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/** Make a CA (+ optional intermediate) and a signer with EKU codeSigning, RSA `bits` (default 2048). */
export function makePki(
  opts: { dir?: string; bits?: number; intermediate?: boolean; cn?: string } = {},
): TestPki {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'marsign-pki-'));
  const bits = String(opts.bits ?? 2048);
  writeFileSync(
    join(dir, 'ext.cnf'),
    [
      '[ca]',
      'basicConstraints=critical,CA:TRUE',
      'keyUsage=critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
      '[leaf]',
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=codeSigning',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'),
  );
  openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    `rsa:${bits}`,
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '3650',
    '-subj',
    '/CN=marsign test root CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  let issuer = 'ca';
  if (opts.intermediate) {
    openssl(dir, [
      'req',
      '-newkey',
      `rsa:${bits}`,
      '-nodes',
      '-keyout',
      'int.key',
      '-out',
      'int.csr',
      '-subj',
      '/CN=marsign test intermediate CA',
    ]);
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      'int.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-set_serial',
      '2',
      '-days',
      '3650',
      '-extfile',
      'ext.cnf',
      '-extensions',
      'ca',
      '-out',
      'int.pem',
    ]);
    issuer = 'int';
  }
  openssl(dir, [
    'req',
    '-newkey',
    `rsa:${bits}`,
    '-nodes',
    '-keyout',
    'key.pem',
    '-out',
    'leaf.csr',
    '-subj',
    `/CN=${opts.cn ?? 'marsign test signer'}`,
  ]);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    'leaf.csr',
    '-CA',
    `${issuer}.pem`,
    '-CAkey',
    `${issuer}.key`,
    '-set_serial',
    '0x0a1b2c3d4e5f',
    '-days',
    '825',
    '-extfile',
    'ext.cnf',
    '-extensions',
    'leaf',
    '-out',
    'cert.pem',
  ]);
  const certDer = pemToDer(join(dir, 'cert.pem'));
  const chainDer = [certDer];
  if (opts.intermediate) chainDer.push(pemToDer(join(dir, 'int.pem')));
  const privateKey = createPrivateKey(readFileSync(join(dir, 'key.pem')));
  return {
    dir,
    caPemPath: join(dir, 'ca.pem'),
    caDer: pemToDer(join(dir, 'ca.pem')),
    certPemPath: join(dir, 'cert.pem'),
    certDer,
    keyPemPath: join(dir, 'key.pem'),
    chainDer,
    key: nodeSigningKey(privateKey),
  };
}

export interface OsslResult {
  code: number;
  output: string;
}

/** `osslsigncode verify -CAfile ... [-TSA-CAfile ...] -in file` (stdout + stderr). */
export function osslVerify(file: string, caPemPath: string, tsaCaPemPath?: string): Promise<OsslResult> {
  const args = [
    'verify',
    '-CAfile',
    caPemPath,
    ...(tsaCaPemPath ? ['-TSA-CAfile', tsaCaPemPath] : []),
    '-in',
    file,
  ];
  return new Promise((resolve) => {
    execFile('osslsigncode', args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

/** osslsigncode's verdict: exit 0 and a "Signature verification: ok" line. */
export function osslOk(r: OsslResult): boolean {
  return r.code === 0 && /Signature verification: ok/.test(r.output);
}

/** Run `fn` over `items` with at most `limit` in flight (osslsigncode runs 2 at a time on 2 cores). */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
