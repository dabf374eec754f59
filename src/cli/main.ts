import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { VERSION } from '../version.js';
import { EXIT } from './output.js';
import { commands } from './commands/index.js';

export async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('marsign')
    .usage(
      '$0 <command> [options]\n\nSign the Windows binaries inside Mozilla ARchive (MAR) update files, then the MARs.',
    )
    .version(VERSION)
    .strict()
    .demandCommand(1, 'Name a command; `marsign --help` lists them.')
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`marsign: USAGE: ${msg}\nRun with --help for usage.\n`);
      process.exit(EXIT.ERROR);
    });
  for (const c of commands) cli = cli.command(c as never);
  await cli.parseAsync();
}

await main(hideBin(process.argv));
