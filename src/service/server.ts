/**
 * `marsign serve`: the HTTP API (submit and inspect releases), the operator dashboard, the BullMQ
 * dashboard under /queues, Prometheus /metrics and Dockerflow health endpoints (fastify).
 *
 * Auth (src/service/auth.ts): every route except /metrics and the /__*__ health endpoints needs a
 * client's token, as `Authorization: Bearer <token>` (or Basic with the token as password), or the
 * HttpOnly session cookie a browser gets by opening any page once with `?token=<token>`. No credentials
 * → 401, a token of no client → 403, a client without the route's scope → 403. A client sees only its
 * own releases unless it has `read:all`: another client's release id answers 404, as an unknown one.
 */
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Redis } from 'ioredis';
import { defaultCacheDir } from '../../cache/defaults.js';
import { openCacheStore } from '../../cache/factory.js';
import { resolvePath } from '../config/index.js';
import type { LoadedConfig } from '../config/types.js';
import { CodedError, TransientError, toPlainError } from '../errors.js';
import type { ServiceErrorCode } from './errors.js';
import { BullReleaseQueue } from '../queue/bullmq.js';
import { registerQueueBoard } from '../queue/board.js';
import { createRedis, redisSettings, type RedisSettings } from '../queue/connection.js';
import { configuredRoots, validateRelease } from '../queue/manifest.js';
import { parseReleaseRequest } from '../release/request.js';
import { isRecipeRequest, parseRecipeRequest, validateRecipeRelease } from '../transfer/request.js';
import { buildInfo } from '../build-info.js';
import { VERSION } from '../version.js';
import {
  SESSION_COOKIE,
  SESSION_MAX_AGE_S,
  profileDenied,
  requiredScope,
  type ApiClient,
  type ApiClients,
} from './auth.js';
import { registerBlobRoutes } from './blobs.js';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './dashboard.js';
import { dualProtocolServer } from './h2c.js';
import { heartbeat } from './health.js';
import { createLogger, type Logger } from './logger.js';
import { ServiceMetrics } from './metrics.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated API client (null on public routes). */
    apiClient: ApiClient | null;
  }
}

export interface ServerOptions {
  config: LoadedConfig;
  /** The API clients (loadClients). */
  clients: ApiClients;
  redis?: RedisSettings;
  logger?: Logger;
  /** Default: `cache.dir` from the config, else the default cache dir. */
  cacheDir?: string;
  /** Releases listed by GET /releases and the dashboard. */
  listLimit?: number;
  /** Largest blob the blob API accepts (default MAX_BLOB_BYTES). */
  maxBlobBytes?: number;
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
              'REDIS_UNAVAILABLE' satisfies ServiceErrorCode,
              `${what}: no answer from Redis within ${REDIS_REQUEST_TIMEOUT_MS} ms`,
            ),
          ),
        REDIS_REQUEST_TIMEOUT_MS,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

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
  const { config, clients } = options;
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

  // Blobs live in the cache store the workers share (a blob kind beside the signed entries).
  const store = await openCacheStore(config, options.cacheDir ? { dir: options.cacheDir } : {});
  if (!store.blobs)
    throw new TransientError(
      'CACHE_NO_BLOBS' satisfies ServiceErrorCode,
      `the cache at ${store.location} holds no blobs`,
    );
  const blobs = store.blobs;

  const app = Fastify({
    loggerInstance: log,
    bodyLimit: BODY_LIMIT,
    trustProxy: process.env.MARSIGN_TRUST_PROXY === '1',
    // HTTP/1.1 and cleartext HTTP/2 on the one port: the remote client's blobs go over one h2 connection.
    serverFactory: (handler) => dualProtocolServer(handler as Parameters<typeof dualProtocolServer>[0]),
  }) as unknown as FastifyInstance;

  app.decorateRequest('apiClient', null);
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    // The matched route's pattern, not the raw URL: `/%71ueues` must not dodge the /queues rule.
    const need = requiredScope(req.method, req.routeOptions.url);
    if (need === 'public') return;
    const wantsHtml = req.method === 'GET' && (req.headers.accept ?? '').includes('text/html');
    const forbidden = (code: string, message: string) => {
      const body = { error: { name: 'AuthError', code, message } };
      return wantsHtml ? reply.code(403).type('text/html').send(LOGIN_HTML) : reply.code(403).send(body);
    };
    const allowed = (client: ApiClient): boolean => {
      if (need === 'client' || client.has(need)) return true;
      req.log.warn({ client: client.name, need, route: req.routeOptions.url }, 'scope denied');
      return false;
    };
    const q = req.query as Record<string, unknown> | undefined;
    const given = typeof q?.token === 'string' ? q.token : undefined;
    if (given !== undefined && req.method === 'GET') {
      const client = clients.byToken(given);
      if (!client) return forbidden('AUTH_FORBIDDEN', 'wrong token');
      // No session for a page the client may not open (a submit-only token gets no dashboard cookie).
      if (!allowed(client)) return forbidden('AUTH_SCOPE', `client ${client.name} lacks the ${need} scope`);
      const secure = req.protocol === 'https' ? '; Secure' : '';
      const clean = scrubQuery(req.url);
      return reply
        .header(
          'set-cookie',
          `${SESSION_COOKIE}=${clients.sessionValue(client)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_MAX_AGE_S}${secure}`,
        )
        .header('cache-control', 'no-store')
        .redirect(clean, 303);
    }
    const r = clients.authenticate(req.headers);
    if (r.result === 'ok') {
      if (!allowed(r.client))
        return forbidden('AUTH_SCOPE', `client ${r.client.name} lacks the ${need} scope`);
      req.apiClient = r.client;
      return;
    }
    if (r.result === 'missing') {
      reply.header('www-authenticate', 'Bearer realm="marsign"');
      if (wantsHtml) return reply.code(401).type('text/html').send(LOGIN_HTML);
      return reply
        .code(401)
        .send({ error: { name: 'AuthError', code: 'AUTH_REQUIRED', message: 'a bearer token is required' } });
    }
    return forbidden('AUTH_FORBIDDEN', 'wrong token');
  });
  const callerOf = (req: FastifyRequest): ApiClient => {
    if (!req.apiClient) throw new Error('no authenticated client on an authenticated route');
    return req.apiClient;
  };
  const notFound = (reply: FastifyReply, id: string) =>
    reply.code(404).send({
      error: { name: 'UsageError', code: 'RELEASE_NOT_FOUND', message: `no release ${JSON.stringify(id)}` },
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
    const client = callerOf(req);
    const body = req.body;
    // Scope before anything else: an out-of-scope profile is refused before any path is looked at.
    const denied = profileDenied(client, body);
    if (denied) {
      req.log.warn({ client: client.name, code: denied.error.code }, 'scope denied');
      return reply.code(403).send(denied);
    }
    if (body === undefined || body === null) {
      return reply.code(400).send({
        error: {
          name: 'UsageError',
          code: 'RELEASE_SCHEMA',
          message: 'the body must be a JSON release request',
        },
      });
    }
    // A recipe release (its inputs are blobs this server holds) or a path release (shared filesystem).
    const manifest = isRecipeRequest(body)
      ? await validateRecipeRelease(parseRecipeRequest(body), { profiles, blobs })
      : await validateRelease(parseReleaseRequest(body, 'the request body'), {
          profiles,
          roots,
          baseDir: roots[0]!,
        });
    // Again on the validated manifest, whatever form the request took: never queue outside the scope.
    const late = profileDenied(client, manifest);
    if (late) return reply.code(403).send(late);
    const r = await withTimeout(queue.submit(manifest, { client: client.name }), 'submit');
    if (!r.created && r.client !== client.name && !client.has('read:all')) {
      // Another client's release: its id is taken (ids are global), nothing else about it is told.
      return reply.code(409).send({
        error: {
          name: 'UsageError',
          code: 'RELEASE_ID_TAKEN',
          message: `release id ${JSON.stringify(r.release)} cannot be used; choose another release id`,
        },
      });
    }
    req.log.info(
      { release: r.release, created: r.created, locales: r.locales.length, client: client.name },
      'release submitted',
    );
    return reply
      .code(r.created ? 201 : 200)
      .header('location', `/releases/${encodeURIComponent(r.release)}`)
      .send(r);
  });

  app.get('/releases', async (req) => {
    const client = callerOf(req);
    const own = client.has('read:all') ? undefined : client.name;
    return { releases: await withTimeout(queue.list({ limit: listLimit, client: own }), 'list') };
  });

  app.get<{ Params: { id: string } }>('/releases/:id', async (req, reply) => {
    const s = await withTimeout(queue.get(req.params.id), 'get');
    // Another client's release answers exactly as an unknown id: ids do not leak.
    if (!s || !callerOf(req).maySee(s.client)) return notFound(reply, req.params.id);
    return s;
  });

  app.get('/overview', async () => {
    const [releases, summary, heartbeats] = await withTimeout(
      Promise.all([queue.list({ limit: listLimit }), metrics.summary(), queue.workers()]),
      'overview',
    );
    return {
      releases,
      // Liveness: every worker heard from lately, dead ones too (their last beat's age keeps growing).
      heartbeats,
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
  // Only what is known (src/build-info.ts): no placeholder commit, no guessed source URL.
  app.get('/__version__', async () => ({ name: 'marsign', version: VERSION, ...buildInfo() }));
  app.get('/__heartbeat__', async (_req, reply) => {
    const hb = await heartbeat({ redis, prefix: settings.prefix, cacheDir, profiles });
    return reply.code(hb.status === 'failed' ? 500 : 200).send(hb);
  });

  registerBlobRoutes(app, {
    blobs,
    profiles,
    redis,
    prefix: settings.prefix,
    callerOf,
    ...(options.maxBlobBytes !== undefined ? { maxBlobBytes: options.maxBlobBytes } : {}),
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
<body><h1>marsign</h1><p>This dashboard needs the token of a client with the <code>read:all</code> scope. Open
this page once as <code>?token=&lt;token&gt;</code>: the server then sets an HttpOnly session cookie and drops
the token from the address.</p></body></html>`;
