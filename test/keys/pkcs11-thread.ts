/**
 * Worker-thread side of the PKCS#11 concurrency test (test/keys/pkcs11.test.ts): loads the profile in
 * this thread, as workers/sign-entry.ts does, and signs the digests it is given.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadConfig, loadProfile } from '../../src/config/index.js';
import { threadSessionCount } from '../../src/keys/pkcs11.js';

const { configPath, profile, digests } = workerData as {
  configPath: string;
  profile: string;
  digests: Uint8Array[];
};
const p = await loadProfile(await loadConfig(configPath), profile);
const key = p.authenticode!.key;
const sigs: Uint8Array[] = [];
for (const d of digests) sigs.push(await key.signDigest('sha256', d));
parentPort!.postMessage({ sigs, sessions: threadSessionCount() });
