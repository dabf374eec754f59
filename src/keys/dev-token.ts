import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ConfigError, type CodedErrorOptions } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { DevKeys } from './dev.js';

function devTokenError(code: DevTokenErrorCode, message: string, options?: CodedErrorOptions): ConfigError {
  return new ConfigError(code, message, options);
}

const run = promisify(execFile);

export type DevTokenErrorCode = 'SOFTHSM_MISSING' | 'SOFTHSM_FAILED';

/** Where Debian, Fedora and source builds put SoftHSM2's PKCS#11 module. */
export const SOFTHSM_MODULES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib64/pkcs11/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
];
export const DEV_TOKEN_LABEL = 'marsign-dev';
/** The environment variable the generated config reads the user PIN from. */
export const DEV_PIN_ENV = 'MARSIGN_PKCS11_PIN';

export interface DevTokenOptions {
  /** Token directory (default `<out>/softhsm`). */
  tokenDir?: string;
  /** PKCS#11 module (default: the first SoftHSM2 module found). */
  module?: string;
}

export interface DevToken {
  tokenDir: string;
  /** softhsm2.conf to export as SOFTHSM2_CONF. */
  softhsmConf: string;
  module: string;
  token: string;
  /** File holding the user PIN (0600); the config reads $MARSIGN_PKCS11_PIN. */
  pinFile: string;
  pinEnv: string;
  authenticodeKeyUri: string;
  marKeyUri: string;
}

/**
 * Put the TEST-ONLY dev keys into a fresh SoftHSM2 token (softhsm2-util imports the PKCS#8 keys,
 * pkcs11-tool writes the certificates) and rewrite the dev config to use them: profile `dev` signs with
 * the token, `dev-files` with the files. Random PINs; the user PIN goes to a 0600 file, never to stdout.
 */
export async function setupDevToken(keys: DevKeys, options: DevTokenOptions = {}): Promise<DevToken> {
  const module = options.module ?? SOFTHSM_MODULES.find((p) => existsSync(p));
  if (!module || !existsSync(module))
    throw devTokenError(
      'SOFTHSM_MISSING',
      `SoftHSM2's PKCS#11 module ${module ?? 'libsofthsm2.so'} was not found: apt-get install softhsm2 opensc (or pass --pkcs11-module)`,
    );
  const tokenDir = resolve(options.tokenDir ?? join(keys.dir, 'softhsm'));
  const conf = join(tokenDir, 'softhsm2.conf');
  const pinFile = join(tokenDir, 'user-pin.txt');
  await mkdir(join(tokenDir, 'tokens'), { recursive: true, mode: 0o700 });
  await writeFileAtomic(
    conf,
    `# TEST-ONLY SoftHSM2 token of marsign keys dev --pkcs11\ndirectories.tokendir = ${join(tokenDir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
    0o644,
  );
  const pin = randomBytes(12).toString('hex');
  const soPin = randomBytes(12).toString('hex');
  await writeFileAtomic(pinFile, pin + '\n', 0o600);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const tool = async (cmd: string, args: string[]): Promise<void> => {
    try {
      await run(cmd, args, { env });
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { stderr?: string };
      if (err.code === 'ENOENT')
        throw devTokenError('SOFTHSM_MISSING', `${cmd} is not installed: apt-get install softhsm2 opensc`);
      // The PINs are on the command line: never echo it, only the tool's own message.
      const msg =
        String(err.stderr ?? '')
          .split('\n')
          .find((l) => l.trim()) ?? 'failed';
      throw devTokenError(
        'SOFTHSM_FAILED',
        `${cmd} ${args[0]}: ${msg.replaceAll(pin, '***').replaceAll(soPin, '***')}`,
      );
    }
  };
  const token = `${DEV_TOKEN_LABEL}-${randomBytes(3).toString('hex')}`;
  await tool('softhsm2-util', ['--init-token', '--free', '--label', token, '--so-pin', soPin, '--pin', pin]);
  const p11 = ['--module', module, '--token-label', token, '--login', '--pin', pin];
  const importKey = (file: string, label: string, id: string) =>
    tool('softhsm2-util', ['--import', file, '--token', token, '--label', label, '--id', id, '--pin', pin]);
  const importCert = async (pem: string, label: string, id: string) => {
    const der = join(tokenDir, `.${label}.cert.der`);
    await writeFileAtomic(der, new X509Certificate(await readFile(pem)).raw, 0o600);
    try {
      await tool('pkcs11-tool', [
        ...p11,
        '--write-object',
        der,
        '--type',
        'cert',
        '--label',
        label,
        '--id',
        id,
      ]);
    } finally {
      await rm(der, { force: true });
    }
  };
  await importKey(keys.codeSigningKey, 'codesign', '01');
  await importCert(keys.codeSigningCert, 'codesign', '01');
  await importCert(keys.caCert, 'ca', '02');
  await importKey(keys.marKey, 'mar', '03');

  const out: DevToken = {
    tokenDir,
    softhsmConf: conf,
    module,
    token,
    pinFile,
    pinEnv: DEV_PIN_ENV,
    authenticodeKeyUri: `pkcs11:token=${token};object=codesign`,
    marKeyUri: `pkcs11:token=${token};object=mar`,
  };
  const cfg = JSON.parse(await readFile(keys.config, 'utf8')) as {
    profiles: { dev: { authenticode: Record<string, unknown>; mar: Record<string, unknown> } };
  };
  const files = cfg.profiles.dev;
  const { certChain: _chain, key: _key, ...auth } = files.authenticode;
  await writeFileAtomic(
    keys.config,
    JSON.stringify(
      {
        pkcs11: { module },
        profiles: {
          dev: {
            // The certificate chain comes from the token (the key's certificate and the CA).
            authenticode: { ...auth, key: out.authenticodeKeyUri, pinEnv: DEV_PIN_ENV },
            mar: { ...files.mar, keys: [out.marKeyUri], pinEnv: DEV_PIN_ENV },
          },
          'dev-files': files,
        },
        '//': `TEST-ONLY token. export SOFTHSM2_CONF=${conf} ${DEV_PIN_ENV}="$(cat ${pinFile})"`,
      },
      null,
      2,
    ) + '\n',
    0o644,
  );
  return out;
}
