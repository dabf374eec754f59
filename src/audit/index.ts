/**
 * The audit trail (docs/ARCHITECTURE.md "Audit"): records (record.ts), the local log and its single
 * writer (log.ts), verification (verify.ts), queries (find.ts), and the service's path through Redis
 * (redis.ts). What the commands and the service open.
 */
import type { LoadedConfig } from '../config/types.js';
import type { Logger } from '../service/logger.js';
import type { AuditDrainer } from './redis.js';
import { AuditLog, auditLogPath } from './log.js';
import { AuditRecorder } from './sink.js';

export { AuditLog, auditLogPath, AUDIT_LOG_ENV, headPath, readHead } from './log.js';
export { AuditRecorder } from './sink.js';
export { localeEvents, marEvent, peEvent } from './record.js';
export type * from './types.js';

/** The config's log, opened (created when new) and checked: a command fails here, before it signs. */
export function openAuditLog(config?: Pick<LoadedConfig, 'file' | 'dir'>): Promise<AuditLog> {
  const rotateBytes = config?.file.audit?.rotateBytes;
  return AuditLog.open(auditLogPath(config), rotateBytes !== undefined ? { rotateBytes } : {});
}

/** The recorder a signing command hands its pipeline, over the config's log. */
export async function commandRecorder(config?: Pick<LoadedConfig, 'file' | 'dir'>): Promise<AuditRecorder> {
  return new AuditRecorder(await openAuditLog(config));
}

/**
 * Start draining the service's audit stream into the config's log (`marsign serve`, `marsign audit
 * drain`): a Redis connection of its own, the lease, the loop. `stop` finishes the batch in hand.
 */
export async function startAuditDrain(
  config: LoadedConfig,
  logger?: Logger,
): Promise<{ log: AuditLog; drainer: AuditDrainer; stop(): Promise<void> }> {
  const [{ createRedis, redisSettings }, { AuditDrainer }] = await Promise.all([
    import('../queue/connection.js'),
    import('./redis.js'),
  ]);
  const log = await openAuditLog(config);
  const settings = redisSettings(config);
  const redis = createRedis(settings);
  if (logger)
    redis.on('error', (err: Error) => logger.warn({ err: err.message }, 'audit drain: redis error'));
  const drainer = AuditDrainer.start({ redis, prefix: settings.prefix, log, ...(logger ? { logger } : {}) });
  return {
    log,
    drainer,
    async stop() {
      await drainer.stop();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
