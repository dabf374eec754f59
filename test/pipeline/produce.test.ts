import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { MessagePort } from 'node:worker_threads';
import { test } from 'node:test';
import type { ArchiveEntry, OpenedArchive } from '../../src/archive/types.js';
import { PassthroughChecks } from '../../src/pipeline/check-flight.js';
import type { SigningContext } from '../../src/pipeline/context.js';
import { newCounters, RunLedger } from '../../src/pipeline/context.js';
import { checkPassthrough } from '../../src/pipeline/passthrough.js';
import { produceEntry } from '../../src/pipeline/produce.js';
import type { ClaimReply, SignEntryResult, SignEntryTask } from '../../src/pipeline/protocol.js';
import { InProcessCoordinator } from '../../src/pipeline/single-flight.js';

const DER = Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x07]);

/**
 * A pool whose task claims a signature, is told to sign, and returns its result — while the claim port's
 * own `signed` message comes later (`late`) or not at all: messages on two ports have no order, and a
 * fast machine delivers the pool's result first.
 */
function fakePool(late: 'never' | 'after-result'): { run(task: SignEntryTask): Promise<unknown> } {
  return {
    async run(task) {
      const port = task.claims as MessagePort;
      port.postMessage({ type: 'claim', imageDigest: 'ab'.repeat(32), imageLength: 1000 });
      const [reply] = (await once(port, 'message')) as [ClaimReply];
      const made = reply.type === 'sign';
      if (made && late === 'after-result')
        setTimeout(() => port.postMessage({ type: 'signed', der: DER }), 50);
      return {
        ok: true,
        output: Uint8Array.from([1, 2, 3]),
        codecSettings: 'stored',
        decoded: { size: 3, crc32: 0 },
        decodedSize: 3,
        outputSha256: '00'.repeat(32),
        madeSignature: made,
        ...(made ? { signature: { der: DER } } : {}),
        timings: { decompressMs: 0, signMs: 0, verifyMs: 0, compressMs: 0 },
      } satisfies SignEntryResult;
    },
  };
}

/** What produceEntry reads of a signing context: a pool, a store (or none), a coordinator, counters. */
function signingContext(pool: unknown, store: unknown, coordinator = new InProcessCoordinator()) {
  return {
    config: { path: '/nonexistent/config.json', sha256: '00'.repeat(32) },
    profile: { name: 'dev', fingerprint: 'cd'.repeat(32) },
    pool,
    store,
    coordinator,
    counters: newCounters(),
  } as unknown as SigningContext;
}

function context(late: 'never' | 'after-result') {
  const signatures = new Map<string, Uint8Array>();
  const store = {
    getSignature: (key: string) => Promise.resolve(signatures.get(key)),
    putSignature: (key: string, der: Uint8Array) => {
      signatures.set(key, der);
      return Promise.resolve();
    },
    put: () => Promise.resolve(),
  };
  return { ctx: signingContext(fakePool(late), store), signatures };
}

for (const late of ['never', 'after-result'] as const) {
  test(`a signature the task made is stored before the entry is done, though its claim message comes ${late === 'never' ? 'never' : 'after the result'}`, async () => {
    const { ctx, signatures } = context(late);
    const ledger = new RunLedger();
    const item = {
      key: 'e1',
      name: 'a.exe',
      raw: Uint8Array.from([9]),
      codec: { codec: 'stored' },
      owner: 'en-US',
    };
    const first = await produceEntry(ctx, ledger, item as never);
    assert.deepEqual([...first.bytes], [1, 2, 3]);
    assert.equal(ctx.counters.signOperations, 1);
    // Stored when produceEntry resolved: the next locale (or process) applies it instead of signing again.
    assert.equal(signatures.size, 1, 'the signature is in the store');
    assert.deepEqual([...[...signatures.values()][0]!], [...DER]);
    const second = await produceEntry(ctx, ledger, { ...item, key: 'e2', owner: 'de' } as never);
    assert.deepEqual([...second.bytes], [1, 2, 3]);
    assert.equal(
      ctx.counters.signOperations,
      1,
      'the second entry with the same image applied the stored signature',
    );
  });
}

test("a passthrough check joined by a locale whose signal is not aborted is done again when its owner's abort ends it", async () => {
  let decodes = 0;
  const pool = {
    async check(_task: unknown, signal?: AbortSignal) {
      decodes++;
      await new Promise((r) => setTimeout(r, 20));
      if (signal?.aborted)
        throw Object.assign(new Error('The task has been aborted'), { name: 'AbortError' });
      return { ok: true };
    },
  };
  const ctx = {
    profile: { limits: { maxEntrySize: 1 << 20, maxCompressionRatio: 1000 } },
    pool,
    store: null,
    checks: new PassthroughChecks(),
    counters: newCounters(),
  } as unknown as SigningContext;
  const archive = { codecOf: () => ({ codec: 'bz2' }) } as unknown as OpenedArchive;
  const entry = { name: 'update.manifest', offset: 0, size: 3 } as unknown as ArchiveEntry;
  const a = new AbortController();
  const first = checkPassthrough(
    { ctx, archive, signal: a.signal },
    entry,
    Uint8Array.of(1, 2, 3),
    'ef'.repeat(32),
  );
  const second = checkPassthrough(
    { ctx, archive, signal: new AbortController().signal },
    entry,
    Uint8Array.of(1, 2, 3),
    'ef'.repeat(32),
  );
  a.abort();
  await assert.rejects(first, /aborted/);
  assert.equal(await second, 'decoded');
  assert.equal(decodes, 2);
});

test('a claim whose task ended never becomes the signer: the signature slot settles when the owner is aborted', async () => {
  let ownerAsked!: () => void;
  const asked = new Promise<void>((r) => (ownerAsked = r));
  const pool = {
    async run(task: SignEntryTask, signal?: AbortSignal) {
      const port = task.claims as MessagePort;
      port.postMessage({ type: 'claim', imageDigest: 'ab'.repeat(32), imageLength: 1000 });
      if (task.name === 'joiner.exe') {
        // The main thread takes the claim (it joins the owner's slot), then the thread dies: not an abort.
        await new Promise((r) => setTimeout(r, 30));
        throw new Error('the worker thread crashed');
      }
      await once(port, 'message'); // told to sign
      ownerAsked();
      await new Promise((_, reject) =>
        signal!.addEventListener('abort', () =>
          reject(Object.assign(new Error('The task has been aborted'), { name: 'AbortError' })),
        ),
      );
    },
  };
  const coordinator = new InProcessCoordinator();
  const ctx = signingContext(pool, null, coordinator);
  const ledger = new RunLedger();
  const item = { raw: Uint8Array.from([9]), codec: { codec: 'stored' } };
  const a = new AbortController();
  const owner = produceEntry(
    ctx,
    ledger,
    { ...item, key: 'e1', name: 'owner.exe', owner: 'en-US' } as never,
    a.signal,
  );
  owner.catch(() => undefined);
  await asked;
  await assert.rejects(
    produceEntry(ctx, ledger, { ...item, key: 'e2', name: 'joiner.exe', owner: 'de' } as never),
    /crashed/,
  );
  a.abort();
  await assert.rejects(owner, { name: 'AbortError' });
  for (let i = 0; i < 50 && coordinator.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(coordinator.size, 0, 'no signature slot left waiting for a task that ended');
});
