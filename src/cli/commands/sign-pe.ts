import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import type { LoadedConfig, SigningProfile } from '../../config/types.js';
import { ConfigError } from '../../errors.js';
import { emit, handler } from '../output.js';

export interface ProfileArgs {
  profile: string;
  config?: string;
  json?: boolean;
}

/** --profile/--config/--json, shared by the signing commands. */
export function withProfile<T>(y: Argv<T>): Argv<T & ProfileArgs> {
  return y
    .option('profile', { type: 'string', demandOption: true, describe: 'Signing profile name in the config' })
    .option('config', {
      type: 'string',
      describe: 'Config file (default: $MARSIGN_CONFIG, else ./marsign.config.json)',
    })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document' });
}

/** Load config and profile; the config is identified on stderr by path and sha256 only (never contents). */
export async function profileFrom(
  argv: ProfileArgs,
): Promise<{ config: LoadedConfig; profile: SigningProfile }> {
  const { loadConfig, loadProfile } = await import('../../config/index.js');
  const config = await loadConfig(argv.config);
  process.stderr.write(`marsign: config ${config.path} sha256 ${config.sha256}\n`);
  return { config, profile: await loadProfile(config, argv.profile) };
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
    const { profile } = await profileFrom(argv);
    if (!profile.authenticode) {
      throw new ConfigError(
        'PROFILE_NO_AUTHENTICODE',
        `profile "${profile.name}" has no "authenticode" section`,
      );
    }
    const [{ signPe }, { writeFileAtomic }] = await Promise.all([
      import('../../signing/authenticode.js'),
      import('../../io/atomic.js'),
    ]);
    const bytes = await readFile(argv.input);
    const mode = (await stat(argv.input)).mode & 0o777;
    const signed = await signPe(bytes, profile.authenticode);
    await writeFileAtomic(argv.output, signed, mode);
    const out = {
      ok: true,
      input: argv.input,
      output: argv.output,
      profile: profile.name,
      bytes: signed.length,
      sha256: createHash('sha256').update(signed).digest('hex'),
    };
    emit(argv, out, (v) => `signed ${v.input} -> ${v.output} (${v.bytes} bytes, sha256 ${v.sha256})`);
  }),
};
