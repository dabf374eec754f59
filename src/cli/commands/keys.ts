import type { Argv, CommandModule } from 'yargs';
import { emit, handler } from '../output.js';

interface DevArgs {
  out: string;
  bits: number;
  'mar-key-bits': number;
  force: boolean;
  pkcs11: boolean;
  'token-dir'?: string;
  'pkcs11-module'?: string;
  json?: boolean;
}

const dev: CommandModule<object, DevArgs> = {
  command: 'dev',
  describe:
    'Write a throwaway TEST-ONLY PKI (CA, code-signing cert, MAR key, TSA cert) and a marsign.config.json',
  builder: (y: Argv) =>
    y
      .option('out', {
        // -o/--output as in every command that writes (README "Conventions"); --out is the old name.
        alias: ['o', 'output'],
        type: 'string',
        demandOption: true,
        describe: 'Directory to write into (created if missing)',
      })
      .option('bits', {
        type: 'number',
        default: 2048,
        describe: 'RSA size of the CA, code-signing and TSA keys',
      })
      .option('mar-key-bits', {
        type: 'number',
        default: 2048,
        describe: 'RSA size of the MAR key (4096 like Mozilla)',
      })
      .option('force', { type: 'boolean', default: false, describe: 'Overwrite an existing set' })
      .option('pkcs11', {
        type: 'boolean',
        default: false,
        describe:
          'Also import the keys into a fresh SoftHSM2 token and make profile "dev" use them (pkcs11: URIs)',
      })
      .option('token-dir', {
        type: 'string',
        describe: 'SoftHSM2 token directory for --pkcs11 (default OUT/softhsm)',
      })
      .option('pkcs11-module', {
        type: 'string',
        describe: 'PKCS#11 module for --pkcs11 (default: SoftHSM2 libsofthsm2.so)',
      })
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document' }),
  handler: handler<DevArgs>(async (argv) => {
    // node-forge (certificate building) is loaded here, never at start-up.
    const { generateDevKeys } = await import('../../keys/dev.js');
    const r = await generateDevKeys(argv.out, {
      bits: argv.bits,
      marKeyBits: argv['mar-key-bits'],
      force: argv.force,
    });
    if (!argv.pkcs11) {
      emit(argv, { ok: true, testOnly: true, ...r }, (v) =>
        [
          `TEST-ONLY keys written to ${v.dir} (never trust them for anything real)`,
          `  config      ${v.config} (profile "dev")`,
          `  CA          ${v.caCert}   (verify --ca)`,
          `  MAR cert    ${v.marCert}   (verify --mar-cert)`,
          `  TSA cert    ${v.tsaCert}`,
          `try: marsign sign-pe IN.exe -o OUT.exe --profile dev --config ${v.config}`,
        ].join('\n'),
      );
      return;
    }
    const { setupDevToken } = await import('../../keys/dev-token.js');
    const t = await setupDevToken(r, {
      ...(argv['token-dir'] ? { tokenDir: argv['token-dir'] } : {}),
      ...(argv['pkcs11-module'] ? { module: argv['pkcs11-module'] } : {}),
    });
    emit(argv, { ok: true, testOnly: true, ...r, pkcs11: t }, (v) =>
      [
        `TEST-ONLY keys written to ${v.dir} and imported into SoftHSM2 token "${t.token}"`,
        `  config      ${v.config} (profile "dev": token keys; "dev-files": the same keys as files)`,
        `  token dir   ${t.tokenDir}`,
        `  key URIs    ${t.authenticodeKeyUri}  ${t.marKeyUri}`,
        `  CA          ${v.caCert}   (verify --ca)`,
        `  MAR cert    ${v.marCert}   (verify --mar-cert)`,
        `export SOFTHSM2_CONF=${t.softhsmConf}`,
        `export ${t.pinEnv}="$(cat ${t.pinFile})"`,
        `try: marsign sign-pe IN.exe -o OUT.exe --profile dev --config ${v.config}`,
      ].join('\n'),
    );
  }),
};

export const keysCommand: CommandModule = {
  command: 'keys <command>',
  describe: 'Key management (keys dev: throwaway test keys)',
  builder: (y: Argv) => y.command(dev as CommandModule).demandCommand(1, 'Name a keys command: dev'),
  handler: () => undefined,
};
