import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../../errors.js';
import type { CliErrorCode } from '../errors.js';
import { emit, handler } from '../output.js';
import { withProfile, type ProfileArgs } from '../profile.js';
import { profileFrom } from './sign-pe.js';

type SignMarArgs = ProfileArgs & { input: string; output: string };

export const signMarCommand: CommandModule<object, SignMarArgs> = {
  command: 'sign-mar <input>',
  describe: 'MAR-sign a MAR as is (entries untouched; existing MAR signatures are replaced)',
  builder: (y: Argv) =>
    withProfile(y)
      .positional('input', { type: 'string', demandOption: true, describe: 'MAR file' })
      .option('output', {
        alias: 'o',
        type: 'string',
        demandOption: true,
        describe: 'Signed MAR',
      }) as Argv<SignMarArgs>,
  handler: handler<SignMarArgs>(async (argv) => {
    const { config, profile } = await profileFrom(argv);
    if (!profile.mar)
      throw new ConfigError(
        'PROFILE_NO_MAR' satisfies CliErrorCode,
        `profile "${profile.name}" has no "mar" section`,
      );
    const [{ signMarFile }, audit, { cliClient }] = await Promise.all([
      import('../../signing/mar-signer.js'),
      import('../../audit/index.js'),
      import('../../audit/identity.js'),
    ]);
    // The audit log is opened (and checked) before anything is signed.
    const recorder = await audit.commandRecorder(config);
    const inputSha256 = await fileSha256(argv.input);
    const info = await signMarFile(argv.input, argv.output, profile.mar);
    const sha256 = await fileSha256(argv.output);
    await recorder.record(
      [
        audit.marEvent(
          profile,
          { client: cliClient() },
          {
            input: resolve(argv.input),
            output: resolve(argv.output),
            inputSha256,
            outputSha256: sha256,
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
      algorithm: profile.mar.algorithm,
      signatures: info.signatures.map((s) => ({ algorithmId: s.algorithmId, length: s.length })),
      entries: info.entries.length,
      outputSize: info.fileSize,
      outputSha256: sha256,
      // The 0.1 names, kept for scripts (README "Conventions").
      bytes: info.fileSize,
      sha256,
    };
    emit(
      argv,
      out,
      (v) =>
        `signed ${v.input} -> ${v.output} (${v.signatures.length} ${v.algorithm} signature(s), ${v.entries} entries, sha256 ${v.sha256})`,
    );
  }),
};

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}
