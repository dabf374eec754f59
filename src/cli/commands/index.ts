import type { CommandModule } from 'yargs';
import { auditCommand } from './audit.js';
import { cacheCommand } from './cache.js';
import { keysCommand } from './keys.js';
import { marCommand } from './mar.js';
import { signLocaleCommand } from './sign-locale.js';
import { signMarCommand } from './sign-mar.js';
import { signPeCommand } from './sign-pe.js';
import { signReleaseCommand } from './sign-release.js';
import { verifyCommand } from './verify.js';
import { enqueueCommand } from './enqueue.js';
import { serveCommand } from './serve.js';
import { statusCommand } from './status.js';
import { workerCommand } from './worker.js';

/**
 * Every CLI command, registered explicitly (one module per file in this folder).
 * Each module's handler only maps flags to library options and calls the library.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  // Signing, embedded (no Redis)
  signReleaseCommand,
  signLocaleCommand,
  signPeCommand,
  signMarCommand,
  verifyCommand,
  // Tools
  keysCommand,
  marCommand,
  cacheCommand,
  auditCommand,
  // The service (BullMQ on Redis)
  workerCommand,
  enqueueCommand,
  statusCommand,
  serveCommand,
];
