/**
 * How the remote client talks to `marsign serve` (docs/BENCHMARKS.md "Transfer" chose by measurement):
 * - `h2`: one HTTP/2 connection (cleartext prior knowledge to `http:` URLs, TLS with ALPN to `https:`),
 *   every request a stream on it — the default;
 * - `h1`: a keep-alive pool of HTTP/1.1 connections (`--transport h1`, for proxies without HTTP/2);
 * - `h1-close`: a new connection per request (the benchmark's baseline only).
 * Each counts the body bytes it sent and received. Responses are read whole (a blob is capped), or
 * streamed to `onChunk` (blob downloads).
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { TransientError } from '../errors.js';
import type { TransferErrorCode } from './errors.js';

export type TransportKind = 'h2' | 'h1' | 'h1-close';
export const TRANSPORTS: readonly TransportKind[] = ['h2', 'h1', 'h1-close'];

export interface TransportRequest {
  method: 'GET' | 'POST' | 'PUT' | 'HEAD';
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Refuse a response body larger than this (default 1 GiB + 1 MiB). */
  maxResponseBytes?: number;
  /**
   * A 2xx response's body is handed here chunk by chunk as it arrives (and not kept in `body`), so a
   * caller keeps what arrived before a cut: a ranged download resumes from there.
   */
  onChunk?: (chunk: Buffer, status: number) => void;
}

export interface TransportResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface Transport {
  readonly kind: TransportKind;
  request(r: TransportRequest): Promise<TransportResponse>;
  /** Body bytes sent and received so far. */
  readonly counters: { sent: number; received: number };
  close(): Promise<void>;
}

/** HTTP/2 flow-control windows of the client (its receive side: downloads); see src/service/h2c.ts. */
const H2_STREAM_WINDOW = 16 * 1024 * 1024;
const H2_SESSION_WINDOW = 64 * 1024 * 1024;
const DEFAULT_MAX_RESPONSE = 1024 * 1024 * 1024 + 1024 * 1024;
/**
 * A request that moves no byte for this long is cancelled and its connection dropped (the retry opens
 * a new one): a stalled connection never hangs a run.
 */
export const IDLE_MS = 60_000;
/** Connections of the HTTP/1.1 keep-alive pool. */
export const H1_POOL_SIZE = 8;

function networkError(err: unknown, origin: string): TransientError {
  const code = (err as NodeJS.ErrnoException)?.code ?? 'ERR_NETWORK';
  return new TransientError(
    'REMOTE_UNREACHABLE' satisfies TransferErrorCode,
    `${origin}: ${code}: ${(err as Error)?.message ?? 'network error'}`,
    {
      details: { errno: code },
    },
  );
}

export function createTransport(kind: TransportKind, base: string, idleMs = IDLE_MS): Transport {
  return kind === 'h2' ? new H2Transport(base, idleMs) : new H1Transport(base, kind === 'h1', idleMs);
}

class H2Transport implements Transport {
  readonly kind = 'h2' as const;
  readonly counters = { sent: 0, received: 0 };
  private session: http2.ClientHttp2Session | undefined;
  private readonly origin: string;
  private pending = 0;
  private alive: NodeJS.Timeout | undefined;

  constructor(
    base: string,
    private readonly idleMs: number,
  ) {
    this.origin = new URL(base).origin;
  }

  private connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const s = http2.connect(this.origin, { settings: { initialWindowSize: H2_STREAM_WINDOW } });
    s.on('error', () => undefined);
    s.once('connect', () => s.setLocalWindowSize(H2_SESSION_WINDOW));
    s.once('close', () => {
      if (this.session === s) this.session = undefined;
    });
    s.once('goaway', () => {
      if (this.session === s) this.session = undefined;
    });
    this.session = s;
    return s;
  }

  /**
   * While a request is pending the process stays up: a session whose socket is not reading (its peer
   * slow, flow control waiting) holds no active handle, and Node would exit mid-transfer (code 13).
   */
  request(r: TransportRequest): Promise<TransportResponse> {
    if (this.pending++ === 0) this.alive = setInterval(() => undefined, 1 << 30);
    const done = () => {
      if (--this.pending === 0) clearInterval(this.alive);
    };
    const p = this.send(r);
    p.then(done, done);
    return p;
  }

  private send(r: TransportRequest): Promise<TransportResponse> {
    return new Promise((resolve, reject) => {
      let session: http2.ClientHttp2Session;
      try {
        session = this.connect();
      } catch (e) {
        reject(networkError(e, this.origin));
        return;
      }
      const headers: http2.OutgoingHttpHeaders = { ':method': r.method, ':path': r.path, ...r.headers };
      if (r.body) headers['content-length'] = r.body.length;
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.request(headers, { endStream: !r.body });
      } catch (e) {
        this.session = undefined;
        reject(networkError(e, this.origin));
        return;
      }
      stream.setTimeout(this.idleMs, () => {
        // Nothing moved for so long: the connection is stuck; the retry starts a new one.
        if (this.session === session) this.session = undefined;
        session.destroy();
      });
      const max = r.maxResponseBytes ?? DEFAULT_MAX_RESPONSE;
      const chunks: Buffer[] = [];
      let size = 0;
      let status = 0;
      let responseHeaders: TransportResponse['headers'] = {};
      stream.on('response', (h) => {
        status = Number(h[':status']);
        responseHeaders = h as TransportResponse['headers'];
      });
      stream.on('data', (c: Buffer) => {
        size += c.length;
        this.counters.received += c.length;
        if (size > max) {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          reject(
            new TransientError(
              'REMOTE_RESPONSE_TOO_LARGE' satisfies TransferErrorCode,
              `${r.path}: response over ${max} bytes`,
            ),
          );
          return;
        }
        if (r.onChunk && status >= 200 && status < 300) r.onChunk(c, status);
        else chunks.push(c);
      });
      stream.on('error', (e) => reject(networkError(e, this.origin)));
      stream.on('close', () => {
        const rst = stream.rstCode;
        if (status === 0 || (rst !== undefined && rst !== http2.constants.NGHTTP2_NO_ERROR)) {
          reject(
            networkError(
              Object.assign(new Error(`stream closed (code ${rst})`), { code: 'ERR_HTTP2_STREAM_RESET' }),
              this.origin,
            ),
          );
          return;
        }
        const body = Buffer.concat(chunks);
        const declared = Number(responseHeaders['content-length']);
        if (Number.isSafeInteger(declared) && declared !== size && r.method !== 'HEAD') {
          reject(
            networkError(
              Object.assign(new Error(`response ended after ${size} of ${declared} bytes`), {
                code: 'ERR_TRUNCATED',
              }),
              this.origin,
            ),
          );
          return;
        }
        resolve({ status, headers: responseHeaders, body });
      });
      if (r.body) {
        this.counters.sent += r.body.length;
        stream.end(r.body);
      }
    });
  }

  async close(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    if (s && !s.closed) await new Promise<void>((r) => s.close(() => r()));
  }
}

class H1Transport implements Transport {
  readonly kind: TransportKind;
  readonly counters = { sent: 0, received: 0 };
  private readonly agent: http.Agent | false;
  private readonly url: URL;

  constructor(
    base: string,
    keepAlive: boolean,
    private readonly idleMs: number,
  ) {
    this.url = new URL(base);
    this.kind = keepAlive ? 'h1' : 'h1-close';
    const Agent = this.url.protocol === 'https:' ? https.Agent : http.Agent;
    this.agent = keepAlive ? new Agent({ keepAlive: true, maxSockets: H1_POOL_SIZE }) : false;
  }

  request(r: TransportRequest): Promise<TransportResponse> {
    const mod = this.url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = { ...r.headers };
      if (r.body) headers['content-length'] = r.body.length;
      if (!this.agent) headers.connection = 'close';
      const req = mod.request(
        {
          protocol: this.url.protocol,
          hostname: this.url.hostname,
          port: this.url.port,
          method: r.method,
          path: r.path,
          headers,
          agent: this.agent,
        },
        (res) => {
          const max = r.maxResponseBytes ?? DEFAULT_MAX_RESPONSE;
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            this.counters.received += c.length;
            if (size > max) {
              res.destroy();
              reject(
                new TransientError(
                  'REMOTE_RESPONSE_TOO_LARGE' satisfies TransferErrorCode,
                  `${r.path}: response over ${max} bytes`,
                ),
              );
              return;
            }
            const status = res.statusCode ?? 0;
            if (r.onChunk && status >= 200 && status < 300) r.onChunk(c, status);
            else chunks.push(c);
          });
          res.on('error', (e) => reject(networkError(e, this.url.origin)));
          res.on('end', () => {
            if (!res.complete) {
              reject(
                networkError(
                  Object.assign(new Error('response cut'), { code: 'ERR_TRUNCATED' }),
                  this.url.origin,
                ),
              );
              return;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
          });
          res.on('aborted', () =>
            reject(
              networkError(Object.assign(new Error('response cut'), { code: 'ECONNRESET' }), this.url.origin),
            ),
          );
        },
      );
      req.on('error', (e) => reject(networkError(e, this.url.origin)));
      // Nothing moved for so long: the socket is destroyed (not reused) and the request retried.
      req.setTimeout(this.idleMs, () =>
        req.destroy(Object.assign(new Error(`no byte for ${this.idleMs} ms`), { code: 'ETIMEDOUT' })),
      );
      if (r.body) this.counters.sent += r.body.length;
      req.end(r.body);
    });
  }

  async close(): Promise<void> {
    if (this.agent) this.agent.destroy();
  }
}
