/**
 * A shaped loopback link for the transfer benchmark: a TCP proxy whose two directions are each a
 * token bucket (`rate` bytes/s, a `burst` of tokens) followed by a fixed one-way `delay`, shared by
 * every connection through it (one link, as a WAN uplink is shared). A direction whose queue holds
 * more than `queueMs` of sending time pauses its sources (TCP backpressure, as a full router queue
 * would), so a fast sender cannot run ahead of the link. A new connection waits one round trip before
 * its first byte goes (the TCP handshake). Counts the bytes each way and the connections.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface LinkOptions {
  /** Bytes per second, each direction. */
  rate: number;
  /** One-way delay in ms (RTT = 2 × delay). */
  delayMs: number;
  /** Token bucket size in bytes (default 64 KiB). */
  burst?: number;
  /** Queue (in ms of sending time) above which the sources are paused (default 50 ms). */
  queueMs?: number;
}

/** One direction of the link: when each chunk leaves the bucket, and when it arrives. */
class Direction {
  bytes = 0;
  private freeAt = 0;
  private readonly paused = new Set<net.Socket>();

  constructor(private readonly o: Required<LinkOptions>) {}

  /** ms from now until a chunk of `len` bytes arrives at the other end. */
  schedule(len: number): number {
    const now = performance.now();
    // Tokens accumulate up to `burst` while the link idles: start no earlier than that allows.
    const start = Math.max(this.freeAt, now - (this.o.burst / this.o.rate) * 1000);
    this.freeAt = start + (len / this.o.rate) * 1000;
    this.bytes += len;
    return Math.max(0, this.freeAt - now) + this.o.delayMs;
  }

  queued(): number {
    return this.freeAt - performance.now();
  }

  hold(s: net.Socket): void {
    if (this.queued() > this.o.queueMs) {
      s.pause();
      this.paused.add(s);
    }
  }

  release(): void {
    if (this.paused.size === 0 || this.queued() > this.o.queueMs / 2) return;
    for (const s of this.paused) s.resume();
    this.paused.clear();
  }
}

export interface ShapedLink {
  url: string;
  port: number;
  /** Bytes client→server (`up`) and server→client (`down`), connections accepted. */
  stats(): { up: number; down: number; connections: number };
  reset(): void;
  close(): Promise<void>;
}

export async function shapedLink(
  target: { host: string; port: number },
  options: LinkOptions,
): Promise<ShapedLink> {
  const o: Required<LinkOptions> = { burst: 64 * 1024, queueMs: 50, ...options };
  const up = new Direction(o);
  const down = new Direction(o);
  let connections = 0;
  const sockets = new Set<net.Socket>();

  /**
   * Forward `from` → `to` through direction `d`, in order: one FIFO and one timer per pipe (a timer
   * per chunk would reorder chunks, timers being armed against the loop's cached clock); the end is
   * forwarded after the last byte arrives. Returns whether bytes are still on the way.
   */
  const pipe = (from: net.Socket, to: net.Socket, d: Direction): (() => boolean) => {
    const queue: { chunk: Buffer; at: number }[] = [];
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const pump = () => {
      timer = undefined;
      while (queue.length > 0 && queue[0]!.at <= performance.now()) {
        const { chunk } = queue.shift()!;
        if (!to.destroyed) to.write(chunk);
      }
      d.release();
      if (queue.length > 0) timer = setTimeout(pump, Math.max(1, queue[0]!.at - performance.now()));
      else if (ended && !to.destroyed) to.end();
    };
    from.on('data', (chunk: Buffer) => {
      const at = performance.now() + d.schedule(chunk.length);
      queue.push({ chunk, at });
      timer ??= setTimeout(pump, Math.max(1, at - performance.now()));
      d.hold(from);
    });
    from.on('end', () => {
      ended = true;
      timer ??= setTimeout(pump, 1);
    });
    return () => queue.length > 0;
  };

  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(target.port, target.host);
    sockets.add(client).add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    // A new connection costs a round trip before its first byte (the TCP handshake over the link:
    // the proxy's own accept is local): the client's bytes wait in the socket for 2 × delay.
    client.pause();
    setTimeout(() => client.resume(), 2 * o.delayMs);
    const upPending = pipe(client, upstream, up);
    const downPending = pipe(upstream, client, down);
    const kill = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', kill);
    upstream.on('error', kill);
    // A side closed: the other is closed once what is still on the link has arrived.
    const later = (): void => {
      if (upPending() || downPending()) setTimeout(later, 2);
      else kill();
    };
    client.on('close', later);
    upstream.on('close', later);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stats: () => ({ up: up.bytes, down: down.bytes, connections }),
    reset() {
      up.bytes = 0;
      down.bytes = 0;
      connections = 0;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
