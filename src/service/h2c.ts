/**
 * HTTP/1.1 and cleartext HTTP/2 (h2c, "prior knowledge", RFC 9113 §3.3) on one port, for fastify's
 * `serverFactory`: the remote client moves many blobs concurrently over one HTTP/2 connection, while
 * browsers, `curl` and `fetch` keep speaking HTTP/1.1 to the same address. Node's HTTP/2 server takes
 * HTTP/1.1 beside it only over TLS (ALPN, `allowHTTP1`), so each connection's first bytes are looked
 * at here: the HTTP/2 connection preface goes to an `http2` server, anything else to the `http` server,
 * both calling fastify's one request handler. The bytes looked at are put back (`unshift`) first.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, {
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import type { Socket } from 'node:net';

/** RFC 9113 §3.4: every HTTP/2 connection starts with these 24 octets. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * HTTP/2 flow-control windows (RFC 9113 §6.9). The 64 KiB defaults cap one connection at 64 KiB per
 * round trip (26 Mbit/s at 20 ms): far below a release link. A blob upload is bounded by the blob size
 * limit anyway; the windows only decide how much may be in flight.
 */
export const H2_STREAM_WINDOW = 16 * 1024 * 1024;
export const H2_SESSION_WINDOW = 64 * 1024 * 1024;
/** Streams one client may have open at once. */
export const H2_MAX_STREAMS = 256;

type Handler = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

/** An `http.Server` (what fastify listens with and closes) that also serves h2c. */
export function dualProtocolServer(
  handler: Handler,
  options: { sessionTimeoutMs?: number } = {},
): http.Server {
  const h1 = http.createServer(handler as (req: IncomingMessage, res: ServerResponse) => void);
  const h2 = http2.createServer(
    { settings: { initialWindowSize: H2_STREAM_WINDOW, maxConcurrentStreams: H2_MAX_STREAMS } },
    handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
  );
  const sessions = new Set<ServerHttp2Session>();
  h2.on('session', (session: ServerHttp2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    session.on('error', () => undefined);
    // The session's receive window (uploads); the stream windows come from the settings above.
    session.once('localSettings', () => session.setLocalWindowSize(H2_SESSION_WINDOW));
    const idle = options.sessionTimeoutMs ?? 72_000;
    session.setTimeout(idle, () => session.close());
  });
  const http1Listeners = h1.listeners('connection') as ((socket: Socket) => void)[];
  h1.removeAllListeners('connection');
  h1.on('connection', (socket: Socket) => {
    let seen = Buffer.alloc(0);
    const decide = (): void => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) {
        socket.once('readable', decide);
        return;
      }
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const maybeH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      // A prefix of the preface: wait for more (a client may send it in pieces).
      if (maybeH2 && seen.length < PREFACE.length) {
        socket.once('readable', decide);
        return;
      }
      socket.unshift(seen);
      if (maybeH2) {
        // The session reads the socket's handle itself, yet the peer's FIN still arrives here (this
        // stream read first): without this, a cut client leaves its session and streams open for ever.
        socket.once('end', () => socket.destroy());
        h2.emit('connection', socket);
      } else for (const l of http1Listeners) l.call(h1, socket);
    };
    socket.on('error', () => undefined);
    socket.once('readable', decide);
  });
  const close = h1.close.bind(h1);
  h1.close = ((cb?: (err?: Error) => void) => {
    // h2 connections are counted by the listening server: close their sessions or it never closes.
    for (const s of sessions) s.close();
    return close(cb);
  }) as typeof h1.close;
  return h1;
}
