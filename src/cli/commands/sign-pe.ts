import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { LoadedConfig, SigningProfile } from '../../config/types.js';
import { ConfigError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import { emit, handler } from '../output.js';
import { chooseProfile, withProfile, type ProfileArgs } from '../profile.js';

/** Load config and profile; the config is identified on stderr by path and sha256 only (never contents). */
export async function profileFrom(
  argv: ProfileArgs,
): Promise<{ config: LoadedConfig; profile: SigningProfile }> {
  const { loadConfig, loadProfile } = await import('../../config/index.js');
  const config = await loadConfig(argv.config);
  process.stderr.write(`marsign: config ${config.path} sha256 ${config.sha256}\n`);
  return { config, profile: await loadProfile(config, chooseProfile(argv.profile, undefined, config)) };
}

type SignPeArgs = ProfileArgs & { input: string; output: string };

export const signPeCommand: CommandModule<object, SignPeArgs> = {
  command: 'sign-pe <input>',
  describe: 'Authenticode-sign one Windows PE file (an existing signature is replaced)',
  builder: (y: Argv) =>
    withProfile(y)
      .positional('input', { type: 'string', demandOption: true, describe: 'PE file (.exe, .dll)' })
      .option('output', {
        alias: 'o',
        type: 'string',
        demandOption: true,
        describe: 'Signed output file',
      }) as Argv<SignPeArgs>,
  handler: handler<SignPeArgs>(async (argv) => {
    const { config, profile } = await profileFrom(argv);
    if (!profile.authenticode) {
      throw new ConfigError(
        'PROFILE_NO_AUTHENTICODE' satisfies CliErrorCode,
        `profile "${profile.name}" has no "authenticode" section`,
      );
    }
    const [A, { writeFileAtomic }, audit, { cliClient }] = await Promise.all([
      import('../../signing/authenticode.js'),
      import('../../io/atomic.js'),
      import('../../audit/index.js'),
      import('../../audit/identity.js'),
    ]);
    // The audit log is opened (and checked) before anything is signed.
    const recorder = await audit.commandRecorder(config);
    const bytes = await readFile(argv.input);
    const mode = (await stat(argv.input)).mode & 0o777;
    // signPe's steps, so the timestamp authority that answered is known for the record.
    const pe = A.preparePe(bytes, profile.authenticode.digest);
    const { der, tsa } = await A.signatureWithAuthority(pe, profile.authenticode);
    const signed = A.applySignature(pe, der);
    await writeFileAtomic(argv.output, signed, mode);
    const sha256 = createHash('sha256').update(signed).digest('hex');
    await recorder.record(
      [
        audit.peEvent(
          profile,
          { client: cliClient() },
          {
            input: resolve(argv.input),
            output: resolve(argv.output),
            inputSha256: createHash('sha256').update(bytes).digest('hex'),
            outputSha256: sha256,
            tsa,
          },
        ),
      ],
      argv.output,
    );
    const out = {
      ok: true,
      input: argv.input,
      output: argv.output,
      profile: profile.name,
      outputSize: signed.length,
      outputSha256: sha256,
      // The 0.1 names, kept for scripts (README "Conventions").
      bytes: signed.length,
      sha256,
    };
    emit(argv, out, (v) => `signed ${v.input} -> ${v.output} (${v.bytes} bytes, sha256 ${v.sha256})`);
  }),
};
