// `node --import` preload for test/cli/startup.test.ts: records every module the process loads into
// the file named by $MARSIGN_RECORD_MODULES, one per line. ES modules (and the CommonJS packages they
// import) through a resolve hook, which sees static and dynamic imports alike; the modules CommonJS
// packages require() internally from require.cache when the process exits.
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

const out = process.env.MARSIGN_RECORD_MODULES;
if (out) {
  register('./record-modules-hooks.mjs', import.meta.url);
  const require = createRequire(import.meta.url);
  process.on('exit', () => {
    appendFileSync(out, Object.keys(require.cache).join('\n') + '\n');
  });
}
