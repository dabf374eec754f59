// Development entry for worker threads when marsign runs from TypeScript sources (tsx), never shipped in
// dist/. Node 20 worker threads do not get tsx's ESM hooks from `--import tsx` in execArgv (tsx registers
// them only on the main thread unless `worker_threads.isInternalThread` exists, Node >= 22.14), so static
// imports load through tsx's CJS path but later dynamic `import()`s of `.ts` modules (the codecs load their
// libraries lazily) fail. Registering the hooks here, in the thread, fixes both.
// The module to run is `workerData.marsignEntry` (a plain Worker, e.g. the side-hash thread); without it,
// the signing pool's task module, whose task functions this module exports for piscina.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const entry = (workerData && workerData.marsignEntry) || './sign-entry.ts';
const mod = await import(entry);
export default mod.default;
// The pool's named tasks (piscina `name`): the passthrough check of workers/check-entry.ts.
export const checkEntry = mod.checkEntry;
