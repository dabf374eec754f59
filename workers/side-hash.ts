/**
 * The side-hash thread (src/pipeline/side-hash.ts `SideHasher`): digests of views of shared memory, so one
 * digest of a finished output runs here while the main thread takes another. Protocol: `DigestRequest` →
 * `DigestReply` (src/pipeline/protocol.ts).
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { DigestReply, DigestRequest } from '../src/pipeline/protocol.js';

parentPort?.on('message', (m: DigestRequest) => {
  let reply: DigestReply;
  try {
    const view = new Uint8Array(m.buffer, m.offset, m.length);
    reply = { id: m.id, hex: createHash(m.algorithm).update(view).digest('hex') };
  } catch (err) {
    reply = { id: m.id, error: String((err as Error)?.message ?? err) };
  }
  parentPort!.postMessage(reply);
});
