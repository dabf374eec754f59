/** The BullMQ dashboard (@bull-board) for the release queues, as a fastify plugin under `basePath`. */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import type { BullReleaseQueue } from './bullmq.js';

export async function registerQueueBoard(
  app: FastifyInstance,
  queue: BullReleaseQueue,
  basePath: string,
): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  createBullBoard({
    queues: [new BullMQAdapter(queue.releases), new BullMQAdapter(queue.locales)],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'marsign' } },
  });
  serverAdapter.setBasePath(basePath);
  await app.register(serverAdapter.registerPlugin(), { prefix: basePath });
}
