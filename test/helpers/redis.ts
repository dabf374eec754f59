/**
 * A private redis-server for tests: a free port, a temp dir, no persistence. Never the machine's shared
 * 6379, so FLUSHALL/SHUTDOWN only ever touch a server this helper started.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** Why Redis tests are skipped (no redis-server binary outside CI), or undefined. */
export const REDIS_SKIP: string | undefined = (() => {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return undefined;
  if (process.env.CI === 'true') throw new Error('CI=true but redis-server is not installed');
  return 'skipped: redis-server not installed (apt-get install redis-server)';
})();

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export class TestRedis {
  private proc: ChildProcess | undefined;
  private readonly dir: string;

  private constructor(
    readonly port: number,
    /** `--requirepass`: clients must AUTH with it (the readiness check does). */
    private readonly password?: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'marsign-redis-'));
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Start a server on a free port and wait until it answers PING. */
  static async start(port?: number, opts: { password?: string } = {}): Promise<TestRedis> {
    const r = new TestRedis(port ?? (await freePort()), opts.password);
    await r.startProcess();
    return r;
  }

  private async startProcess(): Promise<void> {
    const proc = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.dir,
        // BullMQ requires noeviction to keep jobs.
        '--maxmemory-policy',
        'noeviction',
        ...(this.password !== undefined ? ['--requirepass', this.password] : []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    proc.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    this.proc = proc;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${log}`);
      const c = new Redis(this.port, '127.0.0.1', {
        ...(this.password !== undefined ? { password: this.password } : {}),
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      c.on('error', () => undefined);
      try {
        await c.connect();
        if ((await c.ping()) === 'PONG') {
          c.disconnect();
          return;
        }
      } catch {
        // not listening yet
      } finally {
        c.disconnect();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not start on port ${this.port}: ${log}`);
  }

  /** A client to this server (the caller disconnects it). */
  client(): Redis {
    return new Redis(this.url, { maxRetriesPerRequest: null });
  }

  /**
   * Restart on the same port, as a maintenance restart does: `SHUTDOWN SAVE` writes dump.rdb into the
   * temp dir even with no save points, so the queue survives; clients see their connections drop.
   * With `save: false` (`SHUTDOWN NOSAVE`, any old dump removed) it restarts empty, as a Redis without
   * persistence does after a crash or a restart: every key is lost.
   */
  async restart(downMs = 0, opts: { save?: boolean } = {}): Promise<void> {
    const save = opts.save ?? true;
    const p = this.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
      const c = new Redis(this.port, '127.0.0.1', { maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => undefined);
      await c.call('SHUTDOWN', save ? 'SAVE' : 'NOSAVE').catch(() => undefined);
      c.disconnect();
      await exited;
    }
    this.proc = undefined;
    if (!save) rmSync(join(this.dir, 'dump.rdb'), { force: true });
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.startProcess();
  }

  private kill(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
