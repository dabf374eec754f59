#!/usr/bin/env node
// Entry point installed as `marsign`. Runs the compiled CLI (`npm run build`, done by `npm ci` via
// the `prepare` script).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
if (!existsSync(main)) {
  process.stderr.write('marsign: the CLI is not built; run `npm run build` (or `npm ci`) first\n');
  process.exit(2);
}
await import(main);
