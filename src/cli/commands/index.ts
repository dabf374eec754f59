import type { CommandModule } from 'yargs';
import { cacheCommand } from './cache.js';
import { marCommand } from './mar.js';
import { signLocaleCommand } from './sign-locale.js';
import { signReleaseCommand } from './sign-release.js';

/**
 * Every CLI command, registered explicitly (one module per file in this folder).
 * Each module's handler only maps flags to library options and calls the library.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  cacheCommand,
  marCommand,
  signLocaleCommand,
  signReleaseCommand,
];
