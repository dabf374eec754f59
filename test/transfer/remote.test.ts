/**
 * Remote signing over loopback with a real `marsign serve` (in-process), a real `marsign worker` and a
 * private Redis: a release signed with `sign-release --remote` is byte-identical to the same release
 * signed locally (MAR and zip containers); the blob API refuses what it must (digest mismatch,
 * oversize, a recipe naming blobs the server lacks, a profile out of scope before any upload); a
 * connection cut mid-upload resumes from the server's offset, a cut or stalled download by range, an
 * interrupted run (SIGINT, server restart) without re-sending what the server holds; a blob tampered on
 * the way down is caught before an output is written.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { FsCacheStore } from '../../cache/fs-store.js';
import { MarWriter } from '../../src/mar/writer.js';
import { RemoteClient } from '../../src/transfer/client.js';
import { encodeRecipe, sha256Hex } from '../../src/transfer/recipe.js';
import { PROJECT_ROOT, TSX_IMPORT, runCli } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import {
  FIXTURE,
  KEYS,
  copyRelease,
  spawnWorker,
  startServer,
  writeConfig,
  waitFor,
  type RunningServer,
  type WorkerProcess,
} from '../service/harness.js';

const ROBOT = randomBytes(24).toString('hex');
const OTHER = randomBytes(24).toString('hex');
const errorOf = async (res: Response) =>
  ((await res.json()) as { error: { code: string; message: string } }).error;
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/**
 * A TCP proxy counting the bytes each way; `cutAfter` drops the first connection after that many
 * client→server bytes (`cutDownAfter`: server→client), which it forwards at `rate` bytes/s (a link,
 * not loopback: the other side reads as the bytes arrive); `throttleAll`: every connection's uploads;
 * `stallDownAfter`: the first connection stops passing server→client bytes after that many (no close).
 */
async function tcpProxy(
  target: URL | (() => URL),
  o: {
    cutAfter?: number;
    cutDownAfter?: number;
    stallDownAfter?: number;
    rate?: number;
    throttleAll?: boolean;
  } = {},
) {
  const { cutAfter, cutDownAfter, rate = 16 * 1024 * 1024 } = o;
  let up = 0;
  let down = 0;
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const n = connections++;
    let sent = 0;
    let received = 0;
    const to = typeof target === 'function' ? target() : target;
    const upstream = net.connect(Number(to.port), to.hostname);
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d: Buffer) => {
      up += d.length;
      sent += d.length;
      upstream.write(d);
      if (n === 0 && cutAfter !== undefined && sent >= cutAfter) end();
      else if ((n === 0 && cutAfter !== undefined) || o.throttleAll) {
        client.pause();
        setTimeout(() => client.resume(), (d.length / rate) * 1000);
      }
    });
    upstream.on('data', (d: Buffer) => {
      // A stalled link: bytes stop arriving, nothing is closed.
      if (n === 0 && o.stallDownAfter !== undefined && received >= o.stallDownAfter) return;
      down += d.length;
      received += d.length;
      client.write(d);
      if (n === 0 && cutDownAfter !== undefined && received >= cutDownAfter) end();
      else if (n === 0 && cutDownAfter !== undefined) {
        upstream.pause();
        setTimeout(() => upstream.resume(), (d.length / rate) * 1000);
      }
    });
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ up, down, connections }),
    /** Drop every open connection (what a server process that goes away does to them). */
    cutAll: () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** An HTTP/1.1 proxy that flips one byte of every blob it passes down (a man in the middle). */
async function tamperProxy(target: string) {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const up = http.request(
        target + req.url,
        { method: req.method, headers: { ...req.headers, host: new URL(target).host } },
        (r) => {
          const body: Buffer[] = [];
          r.on('data', (c: Buffer) => body.push(c));
          r.on('end', () => {
            const b = Buffer.concat(body);
            if (req.method === 'GET' && req.url?.startsWith('/blobs/') && b.length > 0)
              b[b.length >> 1]! ^= 0x40;
            res.writeHead(r.statusCode ?? 502, r.headers);
            res.end(b);
          });
        },
      );
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('remote signing over the blob API', { skip: REDIS_SKIP, timeout: 240_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let cfg: string;
  let server: RunningServer;
  let worker: WorkerProcess;
  let store: FsCacheStore;
  const env = { MARSIGN_T_ROBOT: ROBOT, MARSIGN_T_OTHER: OTHER };
  const remote = (args: string[], token = 'MARSIGN_T_ROBOT', url = server.url) =>
    runCli([...args, '--remote', url, '--token-env', token, '--json'], { env, timeoutMs: 60_000 });
  const api = (path: string, init: RequestInit & { token?: string } = {}) =>
    fetch(server.url + path, {
      ...init,
      headers: {
        authorization: `Bearer ${init.token ?? ROBOT}`,
        ...(init.headers as Record<string, string>),
      },
    });

  before(async () => {
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-transfer-'));
    Object.assign(process.env, env);
    cfg = writeConfig(dir, redis.url, ['dev', 'extra'], {
      clients: {
        robot: { tokenEnv: 'MARSIGN_T_ROBOT', profiles: ['dev'], scopes: ['submit', 'read:own'] },
        other: { tokenEnv: 'MARSIGN_T_OTHER', profiles: ['extra'], scopes: ['submit', 'read:own'] },
      },
    });
    server = await startServer(cfg);
    worker = spawnWorker(cfg);
    await worker.ready();
    const secret = readFileSync(join(dir, 'cache', '.hmac-secret'), 'latin1').trim();
    store = new FsCacheStore({ root: join(dir, 'cache'), hmacSecret: Buffer.from(secret, 'hex') });
  });

  after(async () => {
    if (worker?.alive) worker.proc.kill('SIGKILL');
    await server?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a client without scope for the profile gets 403 before any upload', async () => {
    const rel = join(dir, 'scope');
    copyRelease(rel, ['de']);
    writeFileSync(
      join(rel, 'release.json'),
      JSON.stringify({ release: 'scope-1', profile: 'dev', locales: { de: 'de/complete.mar' } }),
    );
    const before = (await store.stats()).byKind!.blob.entries;
    const r = await remote(['sign-release', rel, '-o', join(dir, 'scope-out')], 'MARSIGN_T_OTHER');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /marsign: AUTH_PROFILE: /);
    assert.equal((await store.stats()).byKind!.blob.entries, before, 'no blob was stored');
    assert.ok(!r.stderr.includes(OTHER) && !r.stdout.includes(OTHER), 'the token is never printed');
  });

  test('sign-release --remote is byte-identical to a local sign-release; a re-run fetches nothing it has', async () => {
    const rel = join(dir, 'rel');
    copyRelease(rel, ['de', 'fr', 'ja', 'en-US']);
    // A zip container too (the sample release's `win64`): its directory is the skeleton, its entries blobs.
    mkdirSync(join(rel, 'win64'), { recursive: true });
    copyFileSync(join(FIXTURE, 'target.zip'), join(rel, 'win64', 'target.zip'));
    writeFileSync(
      join(rel, 'release.json'),
      JSON.stringify({
        release: 'remote-1',
        profile: 'dev',
        locales: {
          ...Object.fromEntries(['de', 'fr', 'ja', 'en-US'].map((l) => [l, `${l}/complete.mar`])),
          win64: 'win64/target.zip',
        },
      }),
    );
    const clientCache = join(dir, 'client-cache');
    const out = join(dir, 'remote-out');
    const r = await remote(['sign-release', rel, '-o', out, '--client-cache', clientCache]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.totals.failed, 0);
    assert.equal(doc.transfer.marKeys, 'server');
    assert.ok(doc.transfer.blobsUploaded > 0 && doc.transfer.bytesDown > 0);

    // The same release and keys, signed locally with a cache of its own.
    const localCfg = JSON.parse(readFileSync(cfg, 'utf8'));
    localCfg.cache.dir = join(dir, 'local-cache');
    writeFileSync(join(dir, 'local.config.json'), JSON.stringify(localCfg));
    const local = join(dir, 'local-out');
    const l = await runCli([
      'sign-release',
      rel,
      '-o',
      local,
      '-c',
      join(dir, 'local.config.json'),
      '--json',
    ]);
    assert.equal(l.code, 0, l.stderr);
    for (const [loc, name] of [
      ['de', 'complete.mar'],
      ['fr', 'complete.mar'],
      ['ja', 'complete.mar'],
      ['en-US', 'complete.mar'],
      ['win64', 'target.zip'],
    ] as const) {
      const a = readFileSync(join(out, loc, name));
      const b = readFileSync(join(local, loc, name));
      assert.equal(sha(a), sha(b), `${loc}: remote and local outputs differ`);
      assert.notEqual(sha(a), sha(readFileSync(join(rel, loc, name))), `${loc}: the output was signed`);
      const m = JSON.parse(readFileSync(join(out, loc, `${name}.manifest.json`), 'utf8'));
      assert.equal(m.output, join(out, loc, name));
      assert.equal(m.output_sha256, sha(a));
      if (loc === 'win64')
        assert.equal(m.totals.signed + m.totals.hits, 4, "the zip's four PE entries were signed (or shared)");
    }
    assert.equal(
      readFileSync(join(out, 'SHA512SUMS'), 'utf8'),
      readFileSync(join(local, 'SHA512SUMS'), 'utf8'),
    );
    // Independent check of one output's MAR signature.
    const v = await runCli([
      'verify',
      join(out, 'de', 'complete.mar'),
      '--mar-cert',
      join(KEYS, 'mar.cert.pem'),
      '--json',
    ]);
    assert.equal(v.code, 0, v.stdout);

    // Again into a fresh directory: nothing goes up, every output blob comes from the client cache.
    const again = await remote([
      'sign-release',
      rel,
      '-o',
      join(dir, 'remote-out2'),
      '--client-cache',
      clientCache,
    ]);
    assert.equal(again.code, 0, again.stderr);
    const t = JSON.parse(again.stdout).transfer;
    assert.equal(t.blobsUploaded, 0);
    assert.equal(t.bytesUp, 0);
    assert.equal(t.blobsDownloaded, 0);
    assert.ok(t.blobsFromCache > 0);
  });

  test('a blob whose bytes do not match its digest is refused and not stored', async () => {
    const bytes = randomBytes(1000);
    const claimed = sha(randomBytes(8));
    const res = await api(`/blobs/${claimed}`, {
      method: 'PUT',
      body: bytes,
      headers: { 'content-type': 'application/octet-stream', 'x-marsign-blob-size': '1000' },
    });
    assert.equal(res.status, 400);
    assert.equal((await errorOf(res)).code, 'BLOB_DIGEST_MISMATCH');
    assert.equal(await store.blobSize(claimed), undefined);
    assert.equal(await store.uploadOffset(claimed), 0, 'no partial upload kept either');
  });

  test('an oversized blob is refused (declared, and sent beyond its declared size)', async () => {
    const big = await api(`/blobs/${sha('x')}`, {
      method: 'PUT',
      body: Buffer.alloc(10),
      headers: { 'content-type': 'application/octet-stream', 'x-marsign-blob-size': String(2 ** 31) },
    });
    assert.equal(big.status, 413);
    assert.equal((await errorOf(big)).code, 'BLOB_TOO_LARGE');
    const q = await api('/blobs/missing', {
      method: 'POST',
      body: JSON.stringify({ blobs: [{ sha256: sha('y'), size: 2 ** 31 }] }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(q.status, 413);
    const over = await api(`/blobs/${sha('z')}`, {
      method: 'PUT',
      body: Buffer.alloc(100),
      headers: { 'content-type': 'application/octet-stream', 'x-marsign-blob-size': '10' },
    });
    assert.equal(over.status, 400);
    assert.equal((await errorOf(over)).code, 'BLOB_SIZE_MISMATCH');
    assert.equal(await store.blobSize(sha('z')), undefined);
  });

  test('a recipe naming a blob the server does not hold is a clear error', async () => {
    const skeleton = Buffer.from('skeleton');
    const missingEntry = sha('never uploaded');
    const recipe = encodeRecipe({
      format: 'marsign-recipe',
      version: 1,
      container: 'mar',
      size: skeleton.length + 4,
      sha256: sha('whatever'),
      skeleton: { size: skeleton.length, sha256: sha(skeleton) },
      entries: [{ offset: skeleton.length, size: 4, sha256: missingEntry }],
    });
    for (const b of [skeleton, recipe]) {
      const res = await api(`/blobs/${sha256Hex(b)}`, {
        method: 'PUT',
        body: b,
        headers: { 'content-type': 'application/octet-stream', 'x-marsign-blob-size': String(b.length) },
      });
      assert.equal(res.status, 201);
    }
    const res = await api('/releases', {
      method: 'POST',
      body: JSON.stringify({
        release: 'recipe-missing',
        profile: 'dev',
        locales: { de: { recipe: sha256Hex(recipe), name: 'complete.mar' } },
      }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(res.status, 400);
    const body = await errorOf(res);
    assert.equal(body.code, 'RECIPE_BLOB_MISSING');
    assert.match(body.message, new RegExp(missingEntry));
    const unknown = await api('/releases', {
      method: 'POST',
      body: JSON.stringify({
        release: 'recipe-unknown',
        profile: 'dev',
        locales: { de: { recipe: sha('no'), name: 'a.mar' } },
      }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(unknown.status, 400);
    assert.equal((await errorOf(unknown)).code, 'RECIPE_BLOB_MISSING');
  });

  test('a connection cut mid-upload resumes from the server offset, not from the start', async () => {
    const rel = join(dir, 'big');
    mkdirSync(join(rel, 'de'), { recursive: true });
    const payload = randomBytes(6 * 1024 * 1024);
    const w = await MarWriter.create(join(rel, 'de', 'complete.mar'), {
      additionalHeader: true,
      productInfo: { channel: 'test', version: '1.0' },
    });
    await w.addEntry('data/big.bin', 0o644, payload);
    await w.finish();
    await w.commit();
    writeFileSync(
      join(rel, 'release.json'),
      JSON.stringify({ release: 'big-1', profile: 'dev', locales: { de: 'de/complete.mar' } }),
    );
    const cut = 3 * 1024 * 1024;
    const proxy = await tcpProxy(new URL(server.url), { cutAfter: cut });
    try {
      const r = await remote(['enqueue', join(rel, 'release.json')], 'MARSIGN_T_ROBOT', proxy.url);
      assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr} ${r.stdout}`);
      const { up, connections } = proxy.stats();
      assert.ok(connections >= 2, 'the first connection was cut and a new one made');
      // Restarting from 0 would send cut + 6 MiB; resuming sends about 6 MiB in all.
      assert.ok(up < payload.length + cut / 2, `sent ${up} bytes for a ${payload.length}-byte blob`);
      assert.equal(await store.blobSize(sha(payload)), payload.length);
    } finally {
      await proxy.close();
    }
  });

  test('a download cut mid-blob resumes by range: in the same call, and in the next run from the client cache', async () => {
    const put = async (b: Buffer) => {
      const res = await api(`/blobs/${sha(b)}`, {
        method: 'PUT',
        body: b,
        headers: { 'content-type': 'application/octet-stream', 'x-marsign-blob-size': String(b.length) },
      });
      assert.equal(res.status, 201);
    };
    const size = 6 * 1024 * 1024;
    const cut = 2 * 1024 * 1024;
    const payload = randomBytes(size);
    await put(payload);
    const cc = new FsCacheStore({ root: join(dir, 'cc-ranged'), hmacSecret: randomBytes(32) }).blobs;

    // A run that gives up at the cut (one try): what arrived stays in the client cache's partial file.
    const p1 = await tcpProxy(new URL(server.url), { cutDownAfter: cut });
    const c1 = new RemoteClient({ url: p1.url, token: ROBOT, retries: 1 });
    try {
      await assert.rejects(c1.blob(sha(payload), { size, cache: cc }), { code: 'REMOTE_UNREACHABLE' });
    } finally {
      await c1.close();
      await p1.close();
    }
    const kept = await cc.uploadOffset(sha(payload));
    assert.ok(kept > 0 && kept < size, `the client cache kept ${kept} bytes`);
    assert.equal(await cc.blobSize(sha(payload)), undefined, 'no blob before it is whole and checked');

    // The next run asks only for the rest.
    const p2 = await tcpProxy(new URL(server.url));
    const c2 = new RemoteClient({ url: p2.url, token: ROBOT });
    try {
      const b = await c2.blob(sha(payload), { size, cache: cc });
      assert.equal(sha(b), sha(payload));
    } finally {
      await c2.close();
      await p2.close();
    }
    const rest = p2.stats().down;
    assert.ok(rest < size - kept + 64 * 1024, `received ${rest} bytes for the ${size - kept} left`);
    assert.equal(await cc.blobSize(sha(payload)), size);

    // Cut mid-blob with retries left, no client cache: the same call resumes from what it holds.
    const other = randomBytes(size);
    await put(other);
    const p3 = await tcpProxy(new URL(server.url), { cutDownAfter: cut });
    const c3 = new RemoteClient({ url: p3.url, token: ROBOT, backoffMs: 10 });
    try {
      const b = await c3.blob(sha(other), { size });
      assert.equal(sha(b), sha(other));
    } finally {
      await c3.close();
      await p3.close();
    }
    const { down, connections } = p3.stats();
    assert.ok(connections >= 2, 'the first connection was cut and a new one made');
    assert.ok(down < size + cut / 2, `received ${down} bytes for a ${size}-byte blob`);
  });

  test('a stalled connection (bytes stop, nothing closes) is dropped after the idle time; the download resumes', async () => {
    const size = 4 * 1024 * 1024;
    const payload = randomBytes(size);
    const res = await api(`/blobs/${sha(payload)}`, {
      method: 'PUT',
      body: payload,
      headers: { 'content-type': 'application/octet-stream', 'x-marsign-blob-size': String(size) },
    });
    assert.equal(res.status, 201);
    for (const transport of ['h2', 'h1'] as const) {
      const proxy = await tcpProxy(new URL(server.url), { stallDownAfter: 1024 * 1024 });
      const c = new RemoteClient({ url: proxy.url, token: ROBOT, transport, idleMs: 500, backoffMs: 10 });
      try {
        const b = await c.blob(sha(payload), { size });
        assert.equal(sha(b), sha(payload), transport);
      } finally {
        await c.close();
        await proxy.close();
      }
      const { connections, down } = proxy.stats();
      assert.ok(connections >= 2, `${transport}: the stalled connection was dropped and a new one made`);
      assert.ok(down < size + 512 * 1024, `${transport}: ${down} bytes down; the rest was asked by range`);
    }
  });

  test('a run interrupted mid-upload (SIGINT) resumes without re-sending what the server holds', async () => {
    const rel = join(dir, 'interrupted');
    mkdirSync(join(rel, 'de'), { recursive: true });
    const payloads = Array.from({ length: 6 }, () => randomBytes(1024 * 1024));
    const w = await MarWriter.create(join(rel, 'de', 'complete.mar'), {
      additionalHeader: true,
      productInfo: { channel: 'test', version: '1.0' },
    });
    for (const [i, p] of payloads.entries()) await w.addEntry(`data/p${i}.bin`, 0o644, p);
    await w.finish();
    await w.commit();
    writeFileSync(
      join(rel, 'release.json'),
      JSON.stringify({ release: 'interrupted-1', profile: 'dev', locales: { de: 'de/complete.mar' } }),
    );
    const total = payloads.length * 1024 * 1024;
    const heldNow = async () => {
      let n = 0;
      for (const p of payloads)
        n += (await store.blobSize(sha(p))) === p.length ? p.length : await store.uploadOffset(sha(p));
      return n;
    };
    // A slow link (2 MiB/s) so the run is interrupted with part of the release on the server.
    const slow = await tcpProxy(new URL(server.url), { rate: 2 * 1024 * 1024, throttleAll: true });
    const child = spawn(
      process.execPath,
      [
        '--import',
        TSX_IMPORT,
        join(PROJECT_ROOT, 'src/cli/main.ts'),
        'enqueue',
        join(rel, 'release.json'),
        '--remote',
        slow.url,
        '--token-env',
        'MARSIGN_T_ROBOT',
        '--json',
      ],
      { env: { ...process.env, ...env }, stdio: 'ignore' },
    );
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await waitFor('a third of the uploads', async () => (await heldNow()) >= total / 3, 60_000);
      child.kill('SIGINT');
      await exited;
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await slow.close();
    }
    const held = await heldNow();
    assert.ok(held < total, `the run was interrupted before the end (${held} of ${total} held)`);

    const proxy = await tcpProxy(new URL(server.url));
    try {
      const r = await remote(['enqueue', join(rel, 'release.json')], 'MARSIGN_T_ROBOT', proxy.url);
      assert.equal(r.code, 0, r.stderr);
      const t = JSON.parse(r.stdout).transfer;
      assert.ok(t.bytesSkipped >= held, `skipped ${t.bytesSkipped} of the ${held} bytes held`);
      const { up } = proxy.stats();
      assert.ok(up < total - held + 256 * 1024, `sent ${up} bytes; ${total - held} were left`);
      for (const p of payloads) assert.equal(await store.blobSize(sha(p)), p.length);
    } finally {
      await proxy.close();
    }
  });

  test('a server restart mid-upload: the run carries on and continues the uploads where they stood', async () => {
    const rel = join(dir, 'restart');
    mkdirSync(join(rel, 'de'), { recursive: true });
    const payloads = Array.from({ length: 4 }, () => randomBytes(1024 * 1024));
    const w = await MarWriter.create(join(rel, 'de', 'complete.mar'), {
      additionalHeader: true,
      productInfo: { channel: 'test', version: '1.0' },
    });
    for (const [i, p] of payloads.entries()) await w.addEntry(`data/r${i}.bin`, 0o644, p);
    await w.finish();
    await w.commit();
    writeFileSync(
      join(rel, 'release.json'),
      JSON.stringify({ release: 'restart-1', profile: 'dev', locales: { de: 'de/complete.mar' } }),
    );
    const total = payloads.length * 1024 * 1024;
    const heldNow = async () => {
      let n = 0;
      for (const p of payloads)
        n += (await store.blobSize(sha(p))) === p.length ? p.length : await store.uploadOffset(sha(p));
      return n;
    };
    // The client talks to a fixed address; the server behind it is replaced mid-upload.
    const proxy = await tcpProxy(() => new URL(server.url), { rate: 1024 * 1024, throttleAll: true });
    try {
      const run = remote(['enqueue', join(rel, 'release.json')], 'MARSIGN_T_ROBOT', proxy.url);
      await waitFor('a third of the uploads', async () => (await heldNow()) >= total / 3, 60_000);
      // The restart: connections drop at once (a graceful close alone would let the uploads finish).
      proxy.cutAll();
      await server.close();
      const held = await heldNow();
      server = await startServer(cfg);
      const r = await run;
      assert.equal(r.code, 0, r.stderr);
      // Cut uploads are retried; under load the cut may land on the submit that follows the last one.
      assert.match(r.stderr, /retrying (upload|submit)/, 'the run was cut by the restart and retried');
      assert.ok(held < total, `the restart came before the end (${held} of ${total} held)`);
      assert.ok(
        proxy.stats().up < total + 512 * 1024,
        `sent ${proxy.stats().up} for ${total} bytes of blobs`,
      );
      for (const p of payloads) assert.equal(await store.blobSize(sha(p)), p.length);
    } finally {
      await proxy.close();
    }
  });

  test('a blob tampered on the way down is caught before the output is written', async () => {
    const proxy = await tamperProxy(server.url);
    try {
      const out = join(dir, 'tampered-out');
      const r = await remote(
        [
          'sign-release',
          join(dir, 'rel'),
          '-o',
          out,
          '--client-cache',
          join(dir, 'cc-tamper'),
          '--transport',
          'h1',
        ],
        'MARSIGN_T_ROBOT',
        proxy.url,
      );
      assert.equal(r.code, 2, r.stdout);
      assert.match(r.stderr, /BLOB_DIGEST_MISMATCH/);
      for (const l of ['de', 'fr', 'ja', 'en-US'])
        assert.ok(!existsSync(join(out, l, 'complete.mar')), `${l} written`);
    } finally {
      await proxy.close();
    }
  });
});
