/**
 * A real SoftHSM2 token for tests: a private token directory and softhsm2.conf, tokens initialised and
 * keys/certificates imported with the Debian tools (softhsm2-util, pkcs11-tool), as an operator would.
 *
 * SoftHSM reads SOFTHSM2_CONF and scans its token directory once, at C_Initialize, and Cryptoki is
 * initialised once per process: so a test file makes ONE SoftHsm, sets up every token in `before`, and
 * only then loads a key (`useInProcess()` points this process at it).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { tempDir } from './env.js';

const MODULE_CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
];

export const SOFTHSM_MODULE: string | undefined = MODULE_CANDIDATES.find((p) => existsSync(p));

function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function bindingPresent(): boolean {
  try {
    createRequire(import.meta.url)('pkcs11js');
    return true;
  } catch {
    return false;
  }
}

/**
 * Why SoftHSM tests are skipped here, or undefined when they can run. On CI (CI=true) softhsm2, opensc
 * and the pkcs11js binding are installed by .ci/run and npm ci, so a missing piece is a failure.
 */
export const SOFTHSM_SKIP: string | undefined = (() => {
  const missing = [
    SOFTHSM_MODULE ? '' : 'libsofthsm2.so (apt-get install softhsm2)',
    onPath('softhsm2-util') ? '' : 'softhsm2-util (apt-get install softhsm2)',
    onPath('pkcs11-tool') ? '' : 'pkcs11-tool (apt-get install opensc)',
    bindingPresent() ? '' : 'the pkcs11js binding (npm ci with a C++ compiler)',
  ].filter(Boolean);
  if (missing.length === 0) return undefined;
  if (process.env.CI === 'true')
    throw new Error(`CI=true but SoftHSM tests cannot run: missing ${missing.join(', ')}`);
  return `skipped: missing ${missing.join(', ')}`;
})();

export interface ImportOptions {
  token: string;
  pin: string;
  label: string;
  /** CKA_ID as hex. */
  id: string;
}

export class SoftHsm {
  readonly dir: string;
  readonly conf: string;
  readonly module: string;

  constructor() {
    if (!SOFTHSM_MODULE) throw new Error('SoftHSM is not installed');
    this.module = SOFTHSM_MODULE;
    this.dir = tempDir('marsign-softhsm-');
    mkdirSync(join(this.dir, 'tokens'));
    this.conf = join(this.dir, 'softhsm2.conf');
    writeFileSync(
      this.conf,
      [
        `directories.tokendir = ${join(this.dir, 'tokens')}`,
        'objectstore.backend = file',
        'log.level = ERROR',
        'slots.removable = false',
        '',
      ].join('\n'),
    );
  }

  /** Environment for child processes (and this one, via useInProcess) to see this token directory. */
  get env(): Record<string, string> {
    return { SOFTHSM2_CONF: this.conf };
  }

  /** Point this process's SoftHSM at our directory; call before the first key load. */
  useInProcess(): void {
    process.env.SOFTHSM2_CONF = this.conf;
  }

  private run(cmd: string, args: string[]): string {
    return execFileSync(cmd, args, {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString();
  }

  initToken(label: string, pin: string, soPin = '0000'): void {
    this.run('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', soPin, '--pin', pin]);
  }

  /** Import a PKCS#8 PEM private key (the public half is stored too). */
  importKey(keyPem: string, o: ImportOptions): void {
    this.run('softhsm2-util', [
      '--import',
      keyPem,
      '--token',
      o.token,
      '--label',
      o.label,
      '--id',
      o.id,
      '--pin',
      o.pin,
    ]);
  }

  private tool(o: { token: string; pin: string }, args: string[]): string {
    return this.run('pkcs11-tool', [
      '--module',
      this.module,
      '--token-label',
      o.token,
      '--login',
      '--pin',
      o.pin,
      ...args,
    ]);
  }

  /** Write a DER certificate object. */
  importCert(certDer: string, o: ImportOptions): void {
    this.tool(o, ['--write-object', certDer, '--type', 'cert', '--label', o.label, '--id', o.id]);
  }

  /** Generate a key pair in the token (for keys no file holds: EC, restricted mechanisms). */
  generate(keyType: string, o: ImportOptions, extra: string[] = []): void {
    this.tool(o, ['--keypairgen', '--key-type', keyType, '--label', o.label, '--id', o.id, ...extra]);
  }
}
