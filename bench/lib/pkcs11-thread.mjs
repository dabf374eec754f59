// Thread entry for bench/pkcs11.ts: tsx's hooks must be registered inside a Node 20 worker thread
// (see workers/tsx-bootstrap.mjs), then the TypeScript body runs.
import { register } from 'tsx/esm/api';

register();
await import('./pkcs11-thread.ts');
