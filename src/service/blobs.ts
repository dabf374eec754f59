/**
 * The blob API of `marsign serve` (docs/ARCHITECTURE.md "Transfer"): what a remote client needs to move
 * only what the signer lacks. Blobs are raw bytes named by their sha256, kept in the cache store (the
 * directory the workers share), global and content-addressed: a digest is the capability to read one.
 *
 * - `POST /blobs/missing` `{ blobs: [{ sha256, size }] }` → `{ missing: [{ sha256, size, offset }] }`:
 *   the ones the server lacks, each with the bytes an unfinished upload already holds (resume there).
 * - `PUT /blobs/:sha256?offset=N` (`x-marsign-blob-size: <total>`, body = bytes from N): streamed to a
 *   temp file while hashed; at the total the digest is checked (400 `BLOB_DIGEST_MISMATCH`, nothing
 *   stored) and the blob renamed into place (201; 200 when already held). A body ending earlier (a cut
 *   connection, or a chunk on purpose: 202) leaves the bytes for the next PUT at that offset; a wrong
 *   offset is 409 with the right one. Over the size cap: 413 before a byte is read.
 * - `GET /blobs/:sha256`: the bytes, hashed as they are sent; a blob found corrupt is cut off (the
 *   response ends early, never with wrong bytes and a clean end) and removed. `Range: bytes=N-` sends
 *   the rest from N (206): a cut download resumes where it stopped.
 * - `GET /profiles/:name`: the profile's MAR signature algorithm and public keys (SPKI, base64), as the
 *   workers published them, for the client's check of its outputs; 403 `AUTH_PROFILE` for a client
 *   that may not use the profile, so nothing is uploaded before that is known.
 */
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { MAX_BLOB_BYTES } from '../../cache/fs-store.js';
import type { BlobStore } from '../../cache/types.js';
import { CodedError, UsageError } from '../errors.js';
import type { ServiceErrorCode } from './errors.js';
import { readSnapshots } from '../queue/telemetry.js';
import type { ApiClient } from './auth.js';

/** Digests one `POST /blobs/missing` may ask about. */
export const MAX_MISSING_QUERY = 100_000;
/** Body limit of that query (100k digests with sizes fit). */
const MISSING_BODY_LIMIT = 16 * 1024 * 1024;
export const BLOB_SIZE_HEADER = 'x-marsign-blob-size';
const SHA256_HEX = /^[0-9a-f]{64}$/;

export interface BlobRoutesOptions {
  blobs: BlobStore;
  /** Largest blob accepted (default MAX_BLOB_BYTES). */
  maxBlobBytes?: number;
  profiles: string[];
  redis: Redis;
  prefix: string;
  callerOf: (req: FastifyRequest) => ApiClient;
}

function fail(reply: FastifyReply, status: number, code: string, message: string, extra: object = {}) {
  return reply.code(status).send({ error: { name: 'UsageError', code, message, ...extra } });
}

export function registerBlobRoutes(app: FastifyInstance, o: BlobRoutesOptions): void {
  const max = o.maxBlobBytes ?? MAX_BLOB_BYTES;
  // Blob bodies are streamed by the route itself (never buffered, never parsed).
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.post('/blobs/missing', { bodyLimit: MISSING_BODY_LIMIT }, async (req, reply) => {
    const body = req.body as { blobs?: unknown } | null;
    const list = body && typeof body === 'object' ? body.blobs : undefined;
    if (!Array.isArray(list) || list.length > MAX_MISSING_QUERY)
      return fail(
        reply,
        400,
        'BLOB_QUERY',
        `the body must be { blobs: [{ sha256, size }] } with at most ${MAX_MISSING_QUERY} items`,
      );
    const missing: { sha256: string; size: number; offset: number }[] = [];
    for (const [i, b] of list.entries()) {
      const { sha256, size } = (b ?? {}) as { sha256?: unknown; size?: unknown };
      if (
        typeof sha256 !== 'string' ||
        !SHA256_HEX.test(sha256) ||
        !Number.isSafeInteger(size) ||
        (size as number) < 0
      )
        return fail(
          reply,
          400,
          'BLOB_QUERY',
          `blobs[${i}] must be { sha256: 64 lowercase hex, size: integer ≥ 0 }`,
        );
      if ((size as number) > max)
        return fail(
          reply,
          413,
          'BLOB_TOO_LARGE',
          `blob ${sha256} is ${size as number} bytes; the server takes blobs up to ${max}`,
        );
      const held = await o.blobs.blobSize(sha256);
      if (held === size) continue;
      const offset = await o.blobs.uploadOffset(sha256);
      missing.push({ sha256, size: size as number, offset: offset <= (size as number) ? offset : 0 });
    }
    return { missing };
  });

  app.put<{ Params: { sha256: string }; Querystring: { offset?: string } }>(
    '/blobs/:sha256',
    async (req, reply) => {
      const { sha256 } = req.params;
      const body = req.body as Readable | undefined;
      const drain = () => body?.resume();
      if (!SHA256_HEX.test(sha256)) {
        drain();
        return fail(reply, 400, 'BLOB_BAD_DIGEST', 'a blob is named by 64 lowercase hex digits');
      }
      const declared = Number(req.headers[BLOB_SIZE_HEADER]);
      if (!Number.isSafeInteger(declared) || declared < 0) {
        drain();
        return fail(
          reply,
          400,
          'BLOB_SIZE_MISMATCH',
          `the ${BLOB_SIZE_HEADER} header must give the blob's whole size`,
        );
      }
      if (declared > max) {
        // Refused before a byte of the body is read: the connection is not worth keeping for it.
        if (req.raw.httpVersionMajor === 1) reply.header('connection', 'close');
        return fail(
          reply,
          413,
          'BLOB_TOO_LARGE',
          `blob ${sha256} is ${declared} bytes; the server takes blobs up to ${max}`,
        );
      }
      if (!body || typeof (body as Readable).pipe !== 'function')
        return fail(reply, 415, 'BLOB_CONTENT_TYPE', 'a blob is sent as application/octet-stream');
      const offset = req.query.offset === undefined ? 0 : Number(req.query.offset);
      // A cut connection ends the body: HTTP/2 ends it after the bytes already received (kept for a
      // resume at that offset); HTTP/1.1 errors it. Either way the receive loop returns or throws.
      body.on('error', () => undefined);
      try {
        const r = await o.blobs.receiveBlob(sha256, { size: declared, offset, body });
        if (!r.created && r.complete) drain();
        return reply
          .code(r.complete ? (r.created ? 201 : 200) : 202)
          .send({ sha256, size: declared, complete: r.complete, offset: r.offset });
      } catch (err) {
        drain();
        if (err instanceof CodedError && err.code === 'BLOB_UPLOAD_OFFSET')
          return fail(reply, 409, err.code, err.message, { offset: err.details?.offset ?? 0 });
        if (err instanceof CodedError && err.code === 'BLOB_TOO_LARGE')
          return fail(reply, 413, err.code, err.message);
        throw err;
      }
    },
  );

  app.get<{ Params: { sha256: string } }>('/blobs/:sha256', async (req, reply) => {
    const { sha256 } = req.params;
    if (!SHA256_HEX.test(sha256))
      return fail(reply, 400, 'BLOB_BAD_DIGEST', 'a blob is named by 64 lowercase hex digits');
    const reader = await o.blobs.openBlob(sha256);
    if (!reader) return fail(reply, 404, 'BLOB_NOT_FOUND', `the server holds no blob ${sha256}`);
    // `Range: bytes=N-` (a resumed download): the rest from N. Any other range form is ignored (200).
    const m = /^bytes=(\d{1,15})-$/.exec(String(req.headers.range ?? ''));
    const from = m ? Number(m[1]) : 0;
    if (m && from >= reader.size && reader.size > 0) {
      await reader.close();
      return reply
        .code(416)
        .header('content-range', `bytes */${reader.size}`)
        .send({
          error: {
            name: 'UsageError',
            code: 'BLOB_RANGE',
            message: `blob ${sha256} has ${reader.size} bytes; a range from ${from} is past its end`,
          },
        });
    }
    // The whole blob is still read and hashed (a corrupt one is cut off), only the range is sent.
    async function* verified() {
      try {
        let at = 0;
        for await (const chunk of reader!.chunks()) {
          const skip = Math.max(0, Math.min(chunk.length, from - at));
          at += chunk.length;
          if (skip < chunk.length) yield skip > 0 ? chunk.subarray(skip) : chunk;
        }
      } finally {
        await reader!.close();
      }
    }
    const stream = Readable.from(verified(), { objectMode: false });
    stream.on('error', (err) =>
      req.log.warn({ sha256, code: (err as CodedError).code }, 'blob download cut'),
    );
    if (from > 0) reply.code(206).header('content-range', `bytes ${from}-${reader.size - 1}/${reader.size}`);
    return reply
      .type('application/octet-stream')
      .header('content-length', reader.size - from)
      .header('accept-ranges', 'bytes')
      .header('cache-control', 'no-store')
      .send(stream);
  });

  app.get<{ Params: { name: string } }>('/profiles/:name', async (req, reply) => {
    const client = o.callerOf(req);
    const { name } = req.params;
    if (!client.mayUseProfile(name))
      return reply.code(403).send({
        error: {
          name: 'AuthError',
          code: 'AUTH_PROFILE',
          message: `client ${client.name} may not use profile ${JSON.stringify(name.slice(0, 64))}`,
        },
      });
    if (!o.profiles.includes(name))
      throw new UsageError(
        'RELEASE_UNKNOWN_PROFILE' satisfies ServiceErrorCode,
        `profile ${JSON.stringify(name)} is not in the config`,
      );
    // The newest snapshot of a live worker that loaded the profile: the server never loads keys itself.
    const snaps = (await readSnapshots(o.redis, o.prefix)).sort((a, b) =>
      b.updatedAt.localeCompare(a.updatedAt),
    );
    const published = snaps.map((s) => s.marKeys?.[name]).find((k) => k !== undefined);
    return {
      profile: name,
      mar: published ?? null,
      ...(published === undefined
        ? { reason: "no live worker has published this profile's MAR keys yet" }
        : {}),
    };
  });
}
