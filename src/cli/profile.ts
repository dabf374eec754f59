/**
 * The signing profile and config options every signing command shares (README "Conventions"):
 * `-p/--profile`, `-c/--config`, and one rule for the profile when none is named.
 */
import type { Argv } from 'yargs';
import type { LoadedConfig } from '../config/types.js';
import { UsageError } from '../errors.js';
import type { CliErrorCode } from './errors.js';

export interface ProfileArgs {
  profile?: string;
  config?: string;
  json?: boolean;
}

/** -p/--profile (optional: see chooseProfile), -c/--config and --json. */
export function withProfile<T>(y: Argv<T>): Argv<T & ProfileArgs> {
  return y
    .option('profile', {
      alias: 'p',
      type: 'string',
      describe: "signing profile (default: the config's only profile)",
    })
    .option('config', {
      alias: 'c',
      type: 'string',
      describe: 'config file (default: $MARSIGN_CONFIG, else ./marsign.config.json)',
    })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON document' });
}

/**
 * The profile a command uses: the flag, else the request's (release.json "profile"), else the config's
 * only profile. More than one and none named is a usage error that lists them.
 */
export function chooseProfile(
  flag: string | undefined,
  requested: string | undefined,
  config: LoadedConfig,
): string {
  if (flag) return flag;
  if (requested) return requested;
  const names = Object.keys(config.file.profiles ?? {});
  if (names.length === 1) return names[0]!;
  throw new UsageError(
    'PROFILE_REQUIRED' satisfies CliErrorCode,
    `name a signing profile with --profile; ${config.path} has ${names.length} (${names.join(', ') || 'none'})`,
  );
}
