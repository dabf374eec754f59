// Development entry for the signing pool when marsign runs from TypeScript sources (tsx), never
// shipped in dist/. Node 20 worker threads do not get tsx's ESM hooks from `--import tsx` in execArgv
// (tsx registers them only on the main thread unless `worker_threads.isInternalThread` exists,
// Node >= 22.14), so static imports load through tsx's CJS path but later dynamic `import()`s of `.ts`
// modules (the codecs load their libraries lazily) fail. Registering the hooks here, in the thread,
// fixes both. Default-exports the same task function as sign-entry.ts.
import { register } from 'tsx/esm/api';

register();
const { default: signEntry } = await import('./sign-entry.ts');
export default signEntry;
