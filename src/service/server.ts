/**
 * `marsign serve`: the HTTP API (submit and inspect releases), the operator dashboard, the BullMQ
 * dashboard under /queues, Prometheus /metrics and Dockerflow health endpoints (fastify).
 *
 * Auth: every route except /metrics and the /__*__ health endpoints needs the API token, as
 * `Authorization: Bearer <token>` (or Basic with the token as password), or the HttpOnly session
 * cookie a browser gets by opening any page once with `?token=<token>`. No credentials → 401, wrong → 403.
 */
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Redis } from 'ioredis';
import { defaultCacheDir } from '../../cache/defaults.js';
import { resolvePath } from '../config/index.js';
import type { LoadedConfig } from '../config/types.js';
import { CodedError, TransientError, toPlainError } from '../errors.js';
import { BullReleaseQueue } from '../queue/bullmq.js';
import { registerQueueBoard } from '../queue/board.js';
import { createRedis, redisSettings, type RedisSettings } from '../queue/connection.js';
import { configuredRoots, validateRelease } from '../queue/manifest.js';
import { parseReleaseRequest } from '../release/request.js';
import { VERSION } from '../version.js';
import { SESSION_COOKIE, checkAuth, safeEqual, sessionValue } from './auth.js';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './dashboard.js';
import { heartbeat } from './health.js';
import { createLogger, type Logger } from './logger.js';
import { ServiceMetrics } from './metrics.js';

export interface ServerOptions {
  config: LoadedConfig;
  /** The API token (loadServerToken). */
  token: string;
  redis?: RedisSettings;
  logger?: Logger;
  /** Default: `cache.dir` from the config, else the default cache dir. */
  cacheDir?: string;
  /** Releases listed by GET /releases and the dashboard. */
  listLimit?: number;
}

/** A request waiting on Redis longer than this answers 503 instead of hanging (Redis down or restarting). */
export const REDIS_REQUEST_TIMEOUT_MS = 10_000;

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new TransientError(
              'REDIS_UNAVAILABLE',
              `${what}: no answer from Redis within ${REDIS_REQUEST_TIMEOUT_MS} ms`,
            ),
          ),
        REDIS_REQUEST_TIMEOUT_MS,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Paths anyone may read: load balancers and Prometheus don't carry tokens. */
const PUBLIC = new Set(['/__heartbeat__', '/__lbheartbeat__', '/__version__', '/metrics']);
/** Session cookie lifetime. */
const SESSION_MAX_AGE_S = 12 * 60 * 60;
/** Body size limit for POST /releases (a manifest of MAX_LOCALES locales fits easily). */
const BODY_LIMIT = 1024 * 1024;

function errorBody(err: unknown): { error: ReturnType<typeof toPlainError> } {
  const p = toPlainError(err);
  delete p.details;
  return { error: p };
}

/** Client errors of the manifest/validation kind are 400; anything unexpected is 500. */
function statusOf(err: unknown): number {
  if (err instanceof CodedError) {
    return ['UsageError', 'PolicyError', 'FormatError'].includes(err.name) ? 400 : err.retryable ? 503 : 500;
  }
  const s = (err as FastifyError).statusCode;
  return typeof s === 'number' && s >= 400 && s < 600 ? s : 500;
}

export interface Service {
  app: FastifyInstance;
  queue: BullReleaseQueue;
  close(): Promise<void>;
}

export async function buildServer(options: ServerOptions): Promise<Service> {
  const { config, token } = options;
  const log = options.logger ?? createLogger({ name: 'marsign-server' });
  const settings = options.redis ?? redisSettings(config);
  const queue = new BullReleaseQueue(settings, undefined, (err) =>
    log.warn({ err: toPlainError(err) }, 'queue connection error'),
  );
  const redis: Redis = createRedis(settings, { maxRetriesPerRequest: 1, enableOfflineQueue: true });
  redis.on('error', (err: Error) => log.warn({ err: toPlainError(err) }, 'redis connection error'));
  const metrics = new ServiceMetrics(queue, redis, settings.prefix);
  const cacheDir =
    options.cacheDir ??
    (config.file.cache?.dir ? resolvePath(config.dir, config.file.cache.dir) : defaultCacheDir());
  const roots = configuredRoots(config);
  const profiles = Object.keys(config.file.profiles);
  const listLimit = options.listLimit ?? 20;

  const app = Fastify({
    loggerInstance: log,
    bodyLimit: BODY_LIMIT,
    trustProxy: process.env.MARSIGN_TRUST_PROXY === '1',
  }) as unknown as FastifyInstance;

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!;
    if (PUBLIC.has(path)) return;
    const q = req.query as Record<string, unknown> | undefined;
    const given = typeof q?.token === 'string' ? q.token : undefined;
    if (given !== undefined && req.method === 'GET') {
      if (!safeEqual(given, token))
        return reply.code(403).send({ error: { code: 'AUTH_FORBIDDEN', message: 'wrong token' } });
      const secure = req.protocol === 'https' ? '; Secure' : '';
      const clean = scrubQuery(req.url);
      return reply
        .header(
          'set-cookie',
          `${SESSION_COOKIE}=${sessionValue(token)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_MAX_AGE_S}${secure}`,
        )
        .header('cache-control', 'no-store')
        .redirect(clean, 303);
    }
    const r = checkAuth(token, req.headers);
    if (r === 'ok') return;
    const wantsHtml = req.method === 'GET' && (req.headers.accept ?? '').includes('text/html');
    if (r === 'missing') {
      reply.header('www-authenticate', 'Bearer realm="marsign"');
      if (wantsHtml) return reply.code(401).type('text/html').send(LOGIN_HTML);
      return reply
        .code(401)
        .send({ error: { code: 'AUTH_REQUIRED', message: 'a bearer token is required' } });
    }
    return reply.code(403).send({ error: { code: 'AUTH_FORBIDDEN', message: 'wrong token' } });
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const status = statusOf(err);
    if (status >= 500) {
      req.log.error({ err: toPlainError(err) }, 'request failed');
      return reply
        .code(status)
        .send(
          status === 503
            ? errorBody(err)
            : { error: { name: 'Error', code: 'INTERNAL', message: 'internal error' } },
        );
    }
    const body =
      err instanceof CodedError
        ? errorBody(err)
        : { error: { name: 'Error', code: err.code ?? 'BAD_REQUEST', message: err.message } };
    return reply.code(status).send(body);
  });

  app.post('/releases', async (req, reply) => {
    const body = req.body;
    if (body === undefined || body === null) {
      return reply.code(400).send({
        error: {
          name: 'UsageError',
          code: 'RELEASE_SCHEMA',
          message: 'the body must be a JSON release request',
        },
      });
    }
    const manifest = await validateRelease(parseReleaseRequest(body, 'the request body'), {
      profiles,
      roots,
      baseDir: roots[0]!,
    });
    const r = await withTimeout(queue.submit(manifest), 'submit');
    req.log.info({ release: r.release, created: r.created, locales: r.locales.length }, 'release submitted');
    return reply
      .code(r.created ? 201 : 200)
      .header('location', `/releases/${encodeURIComponent(r.release)}`)
      .send(r);
  });

  app.get('/releases', async () => ({
    releases: await withTimeout(queue.list({ limit: listLimit }), 'list'),
  }));

  app.get<{ Params: { id: string } }>('/releases/:id', async (req, reply) => {
    const s = await withTimeout(queue.get(req.params.id), 'get');
    if (!s)
      return reply.code(404).send({
        error: {
          name: 'UsageError',
          code: 'RELEASE_NOT_FOUND',
          message: `no release ${JSON.stringify(req.params.id)}`,
        },
      });
    return s;
  });

  app.get('/overview', async () => {
    const [releases, summary] = await withTimeout(
      Promise.all([queue.list({ limit: listLimit }), metrics.summary()]),
      'overview',
    );
    return {
      releases,
      hitRate: summary.hitRate,
      utilisation: summary.utilisation,
      signOperations: summary.signOperations,
      workers: summary.workers.map((w) => ({
        id: w.id,
        host: w.host,
        accepting: w.accepting,
        pool: w.pool,
        active: w.active,
        canary: w.canary,
        updatedAt: w.updatedAt,
      })),
    };
  });

  const page = (type: string, body: string) => async (_req: FastifyRequest, reply: FastifyReply) =>
    reply
      .type(type)
      .header('cache-control', 'no-store')
      .header('content-security-policy', "default-src 'self'; img-src 'self' data:")
      .send(body);
  app.get('/', page('text/html; charset=utf-8', DASHBOARD_HTML));
  app.get('/dashboard.js', page('text/javascript; charset=utf-8', DASHBOARD_JS));
  app.get('/dashboard.css', page('text/css; charset=utf-8', DASHBOARD_CSS));

  app.get('/metrics', async (_req, reply) =>
    reply.type(metrics.contentType).send(await withTimeout(metrics.render(), 'metrics')),
  );

  app.get('/__lbheartbeat__', async () => ({ status: 'ok' }));
  app.get('/__version__', async () => ({
    name: 'marsign',
    version: VERSION,
    source: 'https://github.com/mozilla/marsign',
    commit: process.env.MARSIGN_COMMIT ?? 'unknown',
    build: process.env.MARSIGN_BUILD ?? 'unknown',
  }));
  app.get('/__heartbeat__', async (_req, reply) => {
    const hb = await heartbeat({ redis, prefix: settings.prefix, cacheDir, profiles });
    return reply.code(hb.status === 'failed' ? 500 : 200).send(hb);
  });

  await registerQueueBoard(app, queue, '/queues');

  return {
    app,
    queue,
    async close() {
      await app.close();
      await queue.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

function scrubQuery(url: string): string {
  const [path, query] = url.split('?', 2) as [string, string | undefined];
  if (!query) return path;
  const params = new URLSearchParams(query);
  params.delete('token');
  const rest = params.toString();
  return rest ? `${path}?${rest}` : path;
}

const LOGIN_HTML = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>marsign — sign in</title></head>
<body><h1>marsign</h1><p>This dashboard needs the API token. Open this page once as
<code>?token=&lt;token&gt;</code>: the server then sets an HttpOnly session cookie and drops the token from the address.</p></body></html>`;
