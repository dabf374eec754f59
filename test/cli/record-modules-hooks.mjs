// Module hooks registered by record-modules.mjs. They run on the loader thread, so each resolved URL is
// appended synchronously: nothing is lost when the process exits right after an import.
import { appendFileSync } from 'node:fs';

const out = process.env.MARSIGN_RECORD_MODULES;

export async function resolve(specifier, context, nextResolve) {
  const r = await nextResolve(specifier, context);
  if (out && !r.url.startsWith('node:')) appendFileSync(out, r.url + '\n');
  return r;
}
