/**
 * API clients and what they may do (docs/OPERATIONS.md "Clients").
 *
 * Each client has its own token, given in the config as an environment variable, a file, or only its
 * sha256: the server keeps nothing but the sha256 of every token and compares digests in constant time,
 * checking every client on each request (no early exit). Browsers cannot send a bearer header, so
 * `?token=` once sets an HttpOnly session cookie `<client>.<expiry>.<mac>`: an HMAC, under the session
 * key, of the client name, the expiry and the token's sha256 (neither the token nor its hash ever reaches
 * the browser; a changed token ends its sessions).
 *
 * A legacy config with the single `server.tokenEnv`/`tokenFile` is one client, `default`, with `admin`.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { resolveSecret } from '../config/index.js';
import { CLIENT_SCOPES, type ClientScope, type LoadedConfig } from '../config/types.js';
import { ConfigError } from '../errors.js';
import type { ServiceErrorCode } from './errors.js';

export const MIN_TOKEN_LENGTH = 16;
export const SESSION_COOKIE = 'marsign_session';
/** Session lifetime (the cookie's Max-Age, and checked by the server from the cookie's own expiry). */
export const SESSION_MAX_AGE_S = 12 * 60 * 60;
/** The client a legacy single-token config becomes. */
export const LEGACY_CLIENT = 'default';
const SESSION_CONTEXT = 'marsign-dashboard-session-v2';
const SESSION_RE = /^([A-Za-z0-9_-]{1,64})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/;

function sha256(s: string | Buffer): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time equality of two strings of any length (both hashed first, so lengths don't leak). */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** The scopes a client's configured scopes grant: `admin` grants all, `read:all` grants `read:own`. */
export function expandScopes(scopes: readonly ClientScope[]): Set<ClientScope> {
  const out = new Set<ClientScope>(scopes);
  if (out.has('admin')) for (const s of CLIENT_SCOPES) out.add(s);
  if (out.has('read:all')) out.add('read:own');
  return out;
}

/**
 * One API client. The token's digest is a private field: a client object can be logged or serialised
 * (`toJSON`: name, scopes, profiles) without it.
 */
export class ApiClient {
  readonly #tokenSha256: Buffer;
  readonly scopes: ReadonlySet<ClientScope>;
  /** Profiles it may submit with; `all` for admin. */
  readonly profiles: ReadonlySet<string> | 'all';

  constructor(
    readonly name: string,
    tokenSha256: Buffer,
    scopes: readonly ClientScope[],
    profiles?: readonly string[],
  ) {
    if (tokenSha256.length !== 32) throw new Error(`client ${name}: a token digest is 32 bytes`);
    this.#tokenSha256 = Buffer.from(tokenSha256);
    this.scopes = expandScopes(scopes);
    this.profiles = this.scopes.has('admin') ? 'all' : new Set(profiles ?? []);
  }

  has(scope: ClientScope): boolean {
    return this.scopes.has(scope);
  }

  mayUseProfile(profile: string): boolean {
    return this.has('submit') && (this.profiles === 'all' || this.profiles.has(profile));
  }

  /** May this client see a release submitted by `owner` (undefined: queued before clients existed)? */
  maySee(owner: string | undefined): boolean {
    return this.has('read:all') || (this.has('read:own') && owner === this.name);
  }

  /** Constant time; the caller compares against every client. */
  matchesDigest(digest: Buffer): boolean {
    return timingSafeEqual(this.#tokenSha256, digest);
  }

  sameToken(other: ApiClient): boolean {
    return other.matchesDigest(this.#tokenSha256);
  }

  sessionMac(key: Buffer, expiresS: number): string {
    return createHmac('sha256', key)
      .update(`${SESSION_CONTEXT}\n${this.name}\n${expiresS}\n`)
      .update(this.#tokenSha256)
      .digest('base64url');
  }

  toJSON(): { name: string; scopes: ClientScope[]; profiles: string[] | 'all' } {
    return {
      name: this.name,
      scopes: CLIENT_SCOPES.filter((s) => this.scopes.has(s)),
      profiles: this.profiles === 'all' ? 'all' : [...this.profiles].sort(),
    };
  }
}

export type AuthResult =
  | { result: 'ok'; client: ApiClient }
  | { result: 'missing'; client?: undefined }
  | { result: 'wrong'; client?: undefined };

export class ApiClients {
  readonly #sessionKey: Buffer;
  private readonly byName: Map<string, ApiClient>;

  constructor(
    readonly list: readonly ApiClient[],
    sessionKey: Buffer = randomBytes(32),
    /** True for a legacy single-token config. */
    readonly legacy = false,
  ) {
    this.#sessionKey = Buffer.from(sessionKey);
    this.byName = new Map(list.map((c) => [c.name, c]));
  }

  /** The client holding this token, comparing its digest with every client's. */
  byToken(token: string): ApiClient | undefined {
    const digest = sha256(token);
    let found: ApiClient | undefined;
    for (const c of this.list) if (c.matchesDigest(digest)) found = c;
    return found;
  }

  /** A session cookie value for a client, valid for SESSION_MAX_AGE_S. */
  sessionValue(client: ApiClient, nowMs = Date.now()): string {
    const exp = Math.floor(nowMs / 1000) + SESSION_MAX_AGE_S;
    return `${client.name}.${exp}.${client.sessionMac(this.#sessionKey, exp)}`;
  }

  /** The client of a session cookie value, or undefined (malformed, expired, forged, other key). */
  verifySession(value: string, nowMs = Date.now()): ApiClient | undefined {
    const m = SESSION_RE.exec(value);
    if (!m) return undefined;
    const client = this.byName.get(m[1]!);
    const exp = Number(m[2]);
    if (!client || exp * 1000 <= nowMs) return undefined;
    return safeEqual(m[3]!, client.sessionMac(this.#sessionKey, exp)) ? client : undefined;
  }

  /**
   * A request's client: `Authorization: Bearer`, Basic (any user, the token as password), or the
   * session cookie. No credentials → missing; credentials that match no client → wrong.
   */
  authenticate(headers: { authorization?: string | undefined; cookie?: string | undefined }): AuthResult {
    const auth = headers.authorization;
    let client: ApiClient | undefined;
    if (auth) {
      const bearer = /^Bearer\s+(.+)$/i.exec(auth);
      const basic = /^Basic\s+(.+)$/i.exec(auth);
      if (bearer) client = this.byToken(bearer[1]!.trim());
      else if (basic) {
        const decoded = Buffer.from(basic[1]!.trim(), 'base64').toString('utf8');
        client = this.byToken(decoded.slice(decoded.indexOf(':') + 1));
      }
    } else {
      const cookie = parseCookies(headers.cookie)[SESSION_COOKIE];
      if (cookie === undefined) return { result: 'missing' };
      client = this.verifySession(cookie);
    }
    return client ? { result: 'ok', client } : { result: 'wrong' };
  }
}

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!header) return out;
  for (const raw of header.split(';')) {
    const part = raw.trim();
    const i = part.indexOf('=');
    if (i <= 0) continue;
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    try {
      out[k] = decodeURIComponent(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}

async function loadToken(ref: { env?: string; file?: string }, where: string, dir: string): Promise<string> {
  const token = await resolveSecret(ref, where, dir);
  if (!token)
    throw new ConfigError('SECRET_MISSING' satisfies ServiceErrorCode, `${where} is not set or empty`);
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(
      'CONFIG_SERVER_TOKEN' satisfies ServiceErrorCode,
      `${where} holds a token shorter than ${MIN_TOKEN_LENGTH} characters (${token.length})`,
    );
  }
  return token;
}

/**
 * The API clients of a config: `server.clients`, else the legacy `server.tokenEnv`/`tokenFile` as the
 * admin client `default`. Tokens are hashed as they are read and dropped. ConfigError when no client is
 * configured, a token is missing or short, or two clients share a token (naming both, never the token).
 */
export async function loadClients(config: LoadedConfig): Promise<ApiClients> {
  const s = config.file.server ?? {};
  const clients: ApiClient[] = [];
  let legacy = false;
  if (s.clients) {
    for (const [name, c] of Object.entries(s.clients)) {
      if (name.startsWith('$') || name.startsWith('//')) continue;
      const at = `server.clients.${name}`;
      const digest = c.tokenSha256
        ? Buffer.from(c.tokenSha256, 'hex')
        : sha256(
            await loadToken(
              { env: c.tokenEnv, file: c.tokenFile },
              c.tokenEnv ? `${at}.tokenEnv (${c.tokenEnv})` : `${at}.tokenFile`,
              config.dir,
            ),
          );
      clients.push(new ApiClient(name, digest, c.scopes, c.profiles));
    }
  } else if (s.tokenEnv || s.tokenFile) {
    const where = s.tokenEnv ? `server.tokenEnv (${s.tokenEnv})` : 'server.tokenFile';
    const token = await loadToken({ env: s.tokenEnv, file: s.tokenFile }, where, config.dir);
    clients.push(new ApiClient(LEGACY_CLIENT, sha256(token), ['admin']));
    legacy = true;
  }
  if (clients.length === 0) {
    throw new ConfigError(
      'CONFIG_SERVER_TOKEN' satisfies ServiceErrorCode,
      'server.clients (or the single server.tokenEnv / server.tokenFile) must name the API clients',
    );
  }
  clients.forEach((b, j) => {
    const a = clients.slice(0, j).find((x) => x.sameToken(b));
    if (a)
      throw new ConfigError(
        'CONFIG_SERVER_TOKEN' satisfies ServiceErrorCode,
        `server.clients.${b.name} has the same token as server.clients.${a.name}: every client needs its own token`,
        { details: { clients: [a.name, b.name] } },
      );
  });
  let sessionKey: Buffer | undefined;
  if (s.sessionSecretEnv || s.sessionSecretFile) {
    const where = s.sessionSecretEnv
      ? `server.sessionSecretEnv (${s.sessionSecretEnv})`
      : 'server.sessionSecretFile';
    sessionKey = sha256(
      await loadToken({ env: s.sessionSecretEnv, file: s.sessionSecretFile }, where, config.dir),
    );
  }
  return new ApiClients(clients, sessionKey, legacy);
}

/** What a route needs: nothing (`public`), any known client (`client`), or a scope. */
export type RouteNeed = ClientScope | 'public' | 'client';

/** Routes anyone may read: load balancers and Prometheus don't carry tokens. */
export const PUBLIC_ROUTES: ReadonlySet<string> = new Set([
  '/__heartbeat__',
  '/__lbheartbeat__',
  '/__version__',
  '/metrics',
]);
const DASHBOARD_ROUTES = new Set(['/', '/overview', '/dashboard.js', '/dashboard.css']);

/**
 * The scope a request needs, from the route fastify matched (its pattern, e.g. `/releases/:id`, so an
 * encoded or oddly written path cannot pick a weaker rule) and the method. bull-board (`/queues`) and
 * the dashboard need `read:all` to look and `admin` for anything else (retry, clean, pause, add, …).
 * Unmatched paths (404) need any client.
 */
export function requiredScope(method: string, route: string | undefined): RouteNeed {
  if (route === undefined) return 'client';
  if (PUBLIC_ROUTES.has(route)) return 'public';
  const read = method === 'GET' || method === 'HEAD';
  if (route === '/releases' && method === 'POST') return 'submit';
  if (route === '/releases' || route === '/releases/:id') return read ? 'read:own' : 'client';
  // Blobs (remote transfer): sending and asking what is missing is part of submitting; reading one
  // (a signed output's pieces) needs any read scope. `/profiles/:name` also checks the profile itself.
  if (route === '/blobs/missing' && method === 'POST') return 'submit';
  if (route === '/blobs/:sha256') return method === 'PUT' ? 'submit' : read ? 'read:own' : 'client';
  if (route === '/profiles/:name') return read ? 'submit' : 'client';
  if (DASHBOARD_ROUTES.has(route) || route === '/queues' || route.startsWith('/queues/'))
    return read ? 'read:all' : 'admin';
  return 'client';
}

/**
 * The 403 body when a client submits with a profile outside its scope, else undefined. Checked on the
 * raw body before the manifest is validated, so an out-of-scope client learns nothing about paths or
 * which profiles exist (a malformed profile is left to the validator's 400).
 */
export function profileDenied(
  client: ApiClient,
  body: unknown,
): { error: { name: string; code: string; message: string } } | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const profile = (body as { profile?: unknown }).profile;
  if (typeof profile !== 'string' || client.mayUseProfile(profile)) return undefined;
  return {
    error: {
      name: 'AuthError',
      code: 'AUTH_PROFILE',
      message: `client ${client.name} may not use profile ${JSON.stringify(profile.slice(0, 64))}`,
    },
  };
}
