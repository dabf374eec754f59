/**
 * A side-hash thread (src/pipeline/side-hash.ts `SideHasher`): digests over ranges of shared memory, so the
 * digests of a finished output run here while the main thread does other work. Protocol: `DigestRequest` →
 * `DigestReply` (src/pipeline/protocol.ts).
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { DigestReply, DigestRequest } from '../src/pipeline/protocol.js';

parentPort?.on('message', (m: DigestRequest) => {
  let reply: DigestReply;
  try {
    const hash = createHash(m.algorithm);
    for (const [offset, length] of m.ranges) hash.update(new Uint8Array(m.buffer, offset, length));
    reply = { id: m.id, hex: hash.digest('hex') };
  } catch (err) {
    reply = { id: m.id, error: String((err as Error)?.message ?? err) };
  }
  parentPort!.postMessage(reply);
});
