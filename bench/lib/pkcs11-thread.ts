/**
 * One signing thread of the session-model measurement (bench/pkcs11.ts):
 * - mode "session": load the profile here (this thread's own token session) and sign N digests;
 * - mode "relay": send each digest to the main thread and wait for its signature (one signing service
 *   on the main thread, one session for the process).
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { loadConfig, loadProfile } from '../../src/config/index.js';

const { mode, configPath, profile, n, port } = workerData as {
  mode: 'session' | 'relay';
  configPath: string;
  profile: string;
  n: number;
  port: MessagePort;
};
const digests = Array.from({ length: n }, (_, i) => createHash('sha256').update(`d${i}`).digest());
let sign: (d: Uint8Array) => Promise<Uint8Array>;
if (mode === 'session') {
  const key = (await loadProfile(await loadConfig(configPath), profile)).authenticode!.key;
  sign = (d) => key.signDigest('sha256', d);
} else {
  let next = 0;
  const waiting = new Map<number, (s: Uint8Array) => void>();
  port.on('message', (m: { id: number; sig: Uint8Array }) => waiting.get(m.id)?.(m.sig));
  sign = (d) =>
    new Promise((res) => {
      const id = next++;
      waiting.set(id, res);
      port.postMessage({ id, digest: d });
    });
}
parentPort!.postMessage('ready');
await new Promise((r) => parentPort!.once('message', r));
for (const d of digests) await sign(d);
parentPort!.postMessage('done');
port?.close();
