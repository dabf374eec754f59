/**
 * The API token: read from the environment variable or file the config names (never inline), compared
 * in constant time. Browsers cannot send a bearer header, so `?token=` once sets an HttpOnly session
 * cookie holding an HMAC of the token (the token itself is never stored in the browser).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { resolveSecret } from '../config/index.js';
import type { LoadedConfig } from '../config/types.js';
import { ConfigError } from '../errors.js';

export const MIN_TOKEN_LENGTH = 16;
export const SESSION_COOKIE = 'marsign_session';
const SESSION_CONTEXT = 'marsign-dashboard-session-v1';

/** The token from `server.tokenEnv` or `server.tokenFile`; ConfigError when absent or too short. */
export async function loadServerToken(config: LoadedConfig): Promise<string> {
  const s = config.file.server ?? {};
  if (!s.tokenEnv && !s.tokenFile) {
    throw new ConfigError(
      'CONFIG_SERVER_TOKEN',
      'server.tokenEnv or server.tokenFile must name the API token',
    );
  }
  const where = s.tokenEnv ? `server.tokenEnv (${s.tokenEnv})` : 'server.tokenFile';
  const token = await resolveSecret({ env: s.tokenEnv, file: s.tokenFile }, where, config.dir);
  if (!token) throw new ConfigError('SECRET_MISSING', `${where} is not set or empty`);
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(
      'CONFIG_SERVER_TOKEN',
      `${where} holds a token shorter than ${MIN_TOKEN_LENGTH} characters (${token.length})`,
    );
  }
  return token;
}

/** Constant-time equality of two strings of any length (both hashed first, so lengths don't leak). */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

export function sessionValue(token: string): string {
  return createHmac('sha256', token).update(SESSION_CONTEXT).digest('hex');
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

export type AuthResult = 'ok' | 'missing' | 'wrong';

/** Check a request's credentials: `Authorization: Bearer`, Basic (any user, token as password), or the session cookie. */
export function checkAuth(
  token: string,
  headers: { authorization?: string | undefined; cookie?: string | undefined },
): AuthResult {
  const auth = headers.authorization;
  if (auth) {
    const bearer = /^Bearer\s+(.+)$/i.exec(auth);
    if (bearer) return safeEqual(bearer[1]!.trim(), token) ? 'ok' : 'wrong';
    const basic = /^Basic\s+(.+)$/i.exec(auth);
    if (basic) {
      const decoded = Buffer.from(basic[1]!.trim(), 'base64').toString('utf8');
      const pw = decoded.slice(decoded.indexOf(':') + 1);
      return safeEqual(pw, token) ? 'ok' : 'wrong';
    }
    return 'wrong';
  }
  const cookie = parseCookies(headers.cookie)[SESSION_COOKIE];
  if (cookie !== undefined) return safeEqual(cookie, sessionValue(token)) ? 'ok' : 'wrong';
  return 'missing';
}
