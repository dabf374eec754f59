/**
 * A real RFC 3161 authority on 127.0.0.1 for tests: node:http in front of `openssl ts -reply`, with a
 * throwaway TSA CA and a TSA certificate (critical EKU timeStamping). `mode` makes it misbehave.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type TsaMode = 'ok' | 'reject' | 'wrong-imprint' | 'garbage' | 'http-503' | 'hang' | 'huge';

export interface TestTsa {
  url: string;
  caPemPath: string;
  caDer: Uint8Array;
  stop(): Promise<void>;
  /** Requests received so far. */
  readonly requests: number;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function tsaSection(name: string, dir: string, digests: string): string {
  return [
    `[${name}]`,
    `dir = ${dir}`,
    'serial = $dir/serial',
    'crypto_device = builtin',
    'signer_cert = $dir/tsa.pem',
    'certs = $dir/tsaca.pem',
    'signer_key = $dir/tsa.key',
    'signer_digest = sha256',
    'default_policy = 1.3.6.1.4.1.4146.2.3',
    `digests = ${digests}`,
    'accuracy = secs:1',
    'ordering = no',
    'tsa_name = no',
    'ess_cert_id_chain = no',
    'ess_cert_id_alg = sha256',
    '',
  ].join('\n');
}

/** Make the TSA PKI once per directory. */
function makeTsaPki(dir: string): void {
  writeFileSync(
    join(dir, 'tsa-ext.cnf'),
    '[tsa]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\n',
  );
  openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'tsaca.key',
    '-out',
    'tsaca.pem',
    '-days',
    '3650',
    '-subj',
    '/CN=marsign test TSA CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  openssl(dir, [
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'tsa.key',
    '-out',
    'tsa.csr',
    '-subj',
    '/CN=marsign test TSA',
  ]);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    'tsa.csr',
    '-CA',
    'tsaca.pem',
    '-CAkey',
    'tsaca.key',
    '-set_serial',
    '7',
    '-days',
    '3650',
    '-extfile',
    'tsa-ext.cnf',
    '-extensions',
    'tsa',
    '-out',
    'tsa.pem',
  ]);
  writeFileSync(join(dir, 'serial'), '01\n');
  writeFileSync(
    join(dir, 'tsa.cnf'),
    // 'reject' only accepts sha384 imprints, so a sha256 request gets a real status "rejection" (badAlg).
    tsaSection('ok', dir, 'sha1, sha256, sha384, sha512') + tsaSection('reject', dir, 'sha384'),
  );
}

export async function startTsa(options: { dir?: string; mode?: TsaMode } = {}): Promise<TestTsa> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'marsign-tsa-'));
  makeTsaPki(dir);
  const mode = options.mode ?? 'ok';
  let requests = 0;
  let queue: Promise<unknown> = Promise.resolve();
  // openssl ts updates the serial file: one request at a time.
  const answer = async (query: Buffer, n: number): Promise<Buffer> => {
    const q = join(dir, `q${n}.tsq`);
    const r = join(dir, `r${n}.tsr`);
    writeFileSync(q, query);
    if (mode === 'wrong-imprint') {
      writeFileSync(join(dir, `other${n}`), `not the signature ${n}`);
      await run('openssl', ['ts', '-query', '-data', join(dir, `other${n}`), '-sha256', '-cert', '-out', q]);
    }
    const section = mode === 'reject' ? 'reject' : 'ok';
    await run('openssl', [
      'ts',
      '-reply',
      '-config',
      join(dir, 'tsa.cnf'),
      '-section',
      section,
      '-queryfile',
      q,
      '-out',
      r,
    ]);
    return readFileSync(r);
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = ++requests;
      if (mode === 'http-503') {
        res.writeHead(503).end('busy');
        return;
      }
      if (mode === 'hang') return; // never answers: the client's timeout must fire
      if (mode === 'huge') {
        res
          .writeHead(200, { 'content-type': 'application/timestamp-reply' })
          .end(Buffer.alloc(2 * 1024 * 1024, 0x30));
        return;
      }
      if (mode === 'garbage') {
        res.writeHead(200, { 'content-type': 'application/timestamp-reply' }).end('this is not DER');
        return;
      }
      const job = queue.then(() => answer(Buffer.concat(chunks), n));
      queue = job.catch(() => undefined);
      job.then(
        (body) => res.writeHead(200, { 'content-type': 'application/timestamp-reply' }).end(body),
        (e: Error) => res.writeHead(500).end(e.message),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const pem = readFileSync(join(dir, 'tsaca.pem'), 'latin1');
  return {
    url: `http://127.0.0.1:${port}/tsa`,
    caPemPath: join(dir, 'tsaca.pem'),
    caDer: new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64')),
    get requests() {
      return requests;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A URL on 127.0.0.1 where nothing listens (a port bound and released), for "authority down". */
export async function downUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `http://127.0.0.1:${port}/tsa`;
}
