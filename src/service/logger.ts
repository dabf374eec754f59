/**
 * Structured JSON logs (pino). Secrets never reach a log line: authorization headers, cookies, tokens
 * and passwords are redacted by path, and request URLs lose their `token` query parameter.
 */
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'token',
  '*.token',
  'password',
  '*.password',
  'passphrase',
  '*.passphrase',
  'hmacSecret',
  '*.hmacSecret',
  'options.password',
  'redis.password',
];

/** A URL with `token=` query values replaced, for logs. */
export function scrubUrl(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/gi, '$1[Redacted]');
}

export function createLogger(
  options: { level?: string; name?: string } = {},
  destination?: DestinationStream,
): Logger {
  const opts = {
    name: options.name ?? 'marsign',
    level: options.level ?? process.env.MARSIGN_LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    serializers: {
      req(req: { method?: string; url?: string; ip?: string; id?: string }) {
        return { id: req.id, method: req.method, url: scrubUrl(req.url ?? ''), ip: req.ip };
      },
      err: pino.stdSerializers.err,
    },
  };
  return destination ? pino(opts, destination) : pino(opts);
}
