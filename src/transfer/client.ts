/**
 * The remote client's API calls (src/service/blobs.ts, src/service/server.ts), over one Transport, with
 * retries: a network error, a cut response or a 503 (the server restarting, Redis away) is tried again
 * with backoff, so an interrupted run carries on where the server stands. The token is sent as a bearer
 * header and never appears in an error or a log line.
 */
import { createHash } from 'node:crypto';
import { CodedError, TransientError, UsageError, isRetryable } from '../errors.js';
import type { TransferErrorCode } from './errors.js';
import type { BlobStore } from '../../cache/types.js';
import type { ReleaseStatus, SubmitResult } from '../queue/types.js';
import { createTransport, type Transport, type TransportKind, type TransportResponse } from './transport.js';

export const BLOB_SIZE_HEADER = 'x-marsign-blob-size';

export interface RemoteOptions {
  url: string;
  token: string;
  transport?: TransportKind;
  /** Tries of one request on a transient failure (default 8: about a minute of backoff). */
  retries?: number;
  /** First backoff delay (doubles, capped at 8 s). */
  backoffMs?: number;
  onRetry?: (what: string, err: unknown, attempt: number) => void;
  /** A request moving no byte for this long is cut and retried on a new connection (default 60 s). */
  idleMs?: number;
}

/** A typed error from the server's `{ error: { name, code, message } }` body. */
export class RemoteError extends CodedError {
  override name: string;
  constructor(
    readonly status: number,
    code: string,
    message: string,
    name = 'RemoteError',
    readonly body?: Record<string, unknown>,
  ) {
    super(code, message);
    this.name = name;
    // The server restarting, or Redis away behind it: worth another try.
    Object.defineProperty(this, 'retryable', { value: status === 502 || status === 503 || status === 504 });
  }
}

export interface MissingBlob {
  sha256: string;
  size: number;
  /** Bytes of an unfinished upload the server holds: continue from here. */
  offset: number;
}

export interface ProfileInfo {
  profile: string;
  mar: { algorithm: 'sha384' | 'sha1'; publicKeys: string[] } | null;
}

/** Digests asked per `POST /blobs/missing`. */
const MISSING_BATCH = 20_000;

export class RemoteClient {
  readonly transport: Transport;
  private readonly auth: string;

  constructor(private readonly o: RemoteOptions) {
    if (!/^https?:\/\//.test(o.url))
      throw new UsageError(
        'REMOTE_URL' satisfies TransferErrorCode,
        `--remote must be an http:// or https:// URL, got ${JSON.stringify(o.url)}`,
      );
    this.transport = createTransport(o.transport ?? 'h2', o.url, o.idleMs);
    this.auth = `Bearer ${o.token}`;
  }

  private path(p: string): string {
    const base = new URL(this.o.url).pathname.replace(/\/$/, '');
    return base + p;
  }

  /** One request, retried on transient failures; non-2xx answers become RemoteError. */
  private async call(
    what: string,
    method: 'GET' | 'POST' | 'PUT',
    path: string,
    init: {
      json?: unknown;
      body?: Uint8Array;
      headers?: Record<string, string>;
      ok?: number[];
      once?: boolean;
    } = {},
  ): Promise<TransportResponse> {
    const retries = init.once ? 1 : (this.o.retries ?? 8);
    let delay = this.o.backoffMs ?? 250;
    for (let attempt = 1; ; attempt++) {
      try {
        const headers: Record<string, string> = { authorization: this.auth, ...init.headers };
        let body = init.body;
        if (init.json !== undefined) {
          headers['content-type'] = 'application/json';
          body = Buffer.from(JSON.stringify(init.json));
        }
        const res = await this.transport.request({
          method,
          path: this.path(path),
          headers,
          ...(body ? { body } : {}),
        });
        if (res.status >= 200 && res.status < 300) return res;
        if (init.ok?.includes(res.status)) return res;
        throw errorOf(res, what);
      } catch (err) {
        if (!isRetryable(err) || attempt >= retries) throw err;
        this.o.onRetry?.(what, err, attempt);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 8_000);
      }
    }
  }

  async profile(name: string): Promise<ProfileInfo> {
    const res = await this.call(`profile ${name}`, 'GET', `/profiles/${encodeURIComponent(name)}`);
    return JSON.parse(res.body.toString('utf8')) as ProfileInfo;
  }

  async missing(blobs: { sha256: string; size: number }[]): Promise<MissingBlob[]> {
    const out: MissingBlob[] = [];
    for (let i = 0; i < blobs.length; i += MISSING_BATCH) {
      const res = await this.call('blob query', 'POST', '/blobs/missing', {
        json: { blobs: blobs.slice(i, i + MISSING_BATCH) },
      });
      out.push(...(JSON.parse(res.body.toString('utf8')) as { missing: MissingBlob[] }).missing);
    }
    return out;
  }

  /**
   * Upload one blob from `offset` (what the server already holds). A cut connection is retried from
   * where the server then stands (409 tells it), never from the start.
   */
  async upload(sha256: string, bytes: Uint8Array, offset = 0): Promise<{ sent: number }> {
    let at = offset;
    let sent = 0;
    const retries = this.o.retries ?? 8;
    for (let attempt = 1; ; attempt++) {
      try {
        const body = bytes.subarray(at);
        // Tried once here: a retry must ask where the server stands first (below), never resend from `at`.
        const res = await this.call(`upload ${sha256}`, 'PUT', `/blobs/${sha256}?offset=${at}`, {
          once: true,
          body,
          headers: { 'content-type': 'application/octet-stream', [BLOB_SIZE_HEADER]: String(bytes.length) },
          ok: [409],
        });
        sent += body.length;
        if (res.status === 409) {
          at = Number(
            (JSON.parse(res.body.toString('utf8')) as { error: { offset?: number } }).error.offset ?? 0,
          );
          continue;
        }
        return { sent };
      } catch (err) {
        if (!isRetryable(err) || attempt >= retries) throw err;
        this.o.onRetry?.(`upload ${sha256}`, err, attempt);
        await new Promise((r) =>
          setTimeout(r, Math.min((this.o.backoffMs ?? 250) * 2 ** (attempt - 1), 8_000)),
        );
        // Where does the server stand now? Continue from there.
        const [m] = await this.missing([{ sha256, size: bytes.length }]);
        if (!m) return { sent };
        at = m.offset;
      }
    }
  }

  async submit(body: unknown): Promise<SubmitResult> {
    const res = await this.call('submit', 'POST', '/releases', { json: body });
    return JSON.parse(res.body.toString('utf8')) as SubmitResult;
  }

  async status(release: string): Promise<ReleaseStatus> {
    const res = await this.call(`status ${release}`, 'GET', `/releases/${encodeURIComponent(release)}`);
    return JSON.parse(res.body.toString('utf8')) as ReleaseStatus;
  }

  /**
   * A blob's bytes, checked against its digest here (a tampered or cut blob is retried, then refused:
   * `BLOB_DIGEST_MISMATCH`). With its `size` known and a `cache`, the download is ranged and resumable:
   * what arrived before a cut is kept in the cache's partial file for the blob (confined in the cache
   * like an upload on the server, removed by prune once stale) and the next try asks only for the rest
   * (`Range: bytes=N-`), in this run or the next; the finished blob is stored in the cache. Without a
   * cache what arrived is kept in memory for the retries of this call.
   */
  async blob(
    sha256: string,
    o: { size?: number; cache?: BlobStore | null; onBytes?: (n: number) => void } = {},
  ): Promise<Uint8Array> {
    const what = `download ${sha256}`;
    const { size } = o;
    const cache = size !== undefined ? (o.cache ?? null) : null;
    const retries = this.o.retries ?? 8;
    let delay = this.o.backoffMs ?? 250;
    let mismatches = 0;
    let memory: Buffer[] = [];
    let at = cache ? await cache.uploadOffset(sha256) : 0;
    if (size !== undefined && at > size) at = 0;
    for (let attempt = 1; ; attempt++) {
      let got: Buffer[] = [];
      let failure: unknown;
      let whole = false;
      try {
        const res = await this.transport.request({
          method: 'GET',
          path: this.path(`/blobs/${sha256}`),
          headers: { authorization: this.auth, ...(at > 0 ? { range: `bytes=${at}-` } : {}) },
          ...(size !== undefined ? { maxResponseBytes: size } : {}),
          onChunk: (c, status) => {
            // A 200 is the whole blob (no range asked, or the server ignored it): start over.
            if (status === 200 && !whole) {
              whole = true;
              at = 0;
              memory = [];
              got = [];
            }
            got.push(c);
            o.onBytes?.(c.length);
          },
        });
        if (res.status !== 200 && res.status !== 206) throw errorOf(res, what);
        if (res.status === 200) whole = true;
      } catch (err) {
        failure = err;
      }
      if (whole) at = 0;
      let bad: string | undefined;
      if (cache && (got.length > 0 || failure === undefined)) {
        try {
          const r = await cache.receiveBlob(sha256, { size: size!, offset: at, body: got });
          at = r.offset;
          if (r.complete) {
            const b = await cache.getBlob(sha256);
            if (b) return b;
            at = 0;
          } else if (failure === undefined) bad = `blob ${sha256} arrived as ${r.offset} of ${size} bytes`;
        } catch (e) {
          const code = (e as CodedError).code;
          if (code === 'BLOB_UPLOAD_OFFSET') at = Number((e as CodedError).details?.offset ?? 0);
          else if (code === 'BLOB_DIGEST_MISMATCH' || code === 'BLOB_SIZE_MISMATCH') {
            bad = (e as Error).message;
            at = 0;
          } else throw e;
        }
      } else if (!cache) {
        memory.push(...got);
        at += got.reduce((n, c) => n + c.length, 0);
        if (failure === undefined) {
          const body = Buffer.concat(memory);
          const actual = createHash('sha256').update(body).digest('hex');
          if (actual === sha256 && (size === undefined || body.length === size)) return body;
          bad = `blob ${sha256} arrived as ${body.length} bytes hashing to ${actual}`;
          memory = [];
          at = 0;
        }
      }
      if (bad !== undefined) {
        if (++mismatches >= Math.min(retries, 3))
          throw new CodedError('BLOB_DIGEST_MISMATCH' satisfies TransferErrorCode, bad);
        this.o.onRetry?.(
          what,
          new TransientError('BLOB_DIGEST_MISMATCH' satisfies TransferErrorCode, bad),
          attempt,
        );
        continue;
      }
      if (!isRetryable(failure) || attempt >= retries) throw failure;
      this.o.onRetry?.(what, failure, attempt);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 8_000);
    }
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

function errorOf(res: TransportResponse, what: string): RemoteError {
  let body: { error?: { name?: string; code?: string; message?: string } } | undefined;
  try {
    body = JSON.parse(res.body.toString('utf8')) as typeof body;
  } catch {
    body = undefined;
  }
  const e = body?.error;
  return new RemoteError(
    res.status,
    e?.code ?? `HTTP_${res.status}`,
    `${what}: the server answered ${res.status}${e?.message ? `: ${e.message}` : ''}`,
    e?.name ?? 'RemoteError',
    e as Record<string, unknown> | undefined,
  );
}
