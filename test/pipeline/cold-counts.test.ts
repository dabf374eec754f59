/**
 * Issue 11 item 4: five cold runs of the sample release (a fresh cache each) report the same signing
 * operations, equal to the unique PEs in it (counted here by decoding every signable entry), and every
 * entry's action says what happened in that run: each PE `signed` exactly once, wherever else it occurs
 * `shared` (signed in this run for another locale, or by the scheduler's prefetch on its behalf), never
 * `cached` (nothing came from an earlier run).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { openArchive } from '../../src/archive/registry.js';
import { decompressWithSettings } from '../../src/codecs/index.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { FileSource } from '../../src/io/byte-source.js';
import { newCounters, RunLedger, type SigningContext } from '../../src/pipeline/context.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import { resolveEntry, type LocaleInput } from '../../src/pipeline/resolve.js';
import { manifestPath } from '../../src/pipeline/report.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { loadReleaseRequest, resolveRequest } from '../../src/release/request.js';
import { tempDir } from '../helpers/env.js';
import { CONFIG_PATH, RELEASE, newCache } from './_support.js';
import { readFileSync } from 'node:fs';

const RUNS = 5;
const SIGNABLE = /\.(exe|dll)$/;

let config: LoadedConfig;
/** sha256 of the decoded PE of every signable entry, by `input\0name`. */
const peOf = new Map<string, string>();
before(async () => {
  config = await loadConfig(CONFIG_PATH);
  const { request, base } = await loadReleaseRequest(RELEASE, {});
  for (const l of resolveRequest(request, base, tempDir(), '.')) {
    const src = await FileSource.open(l.input);
    try {
      const archive = await openArchive(src);
      for (const e of archive.entries.filter((x) => SIGNABLE.test(x.name))) {
        const stored = await src.read(e.offset, e.size);
        const { data } = await decompressWithSettings(stored, { settings: archive.codecOf(e, stored) });
        peOf.set(`${l.input}\0${e.name}`, createHash('sha256').update(data).digest('hex'));
      }
    } finally {
      await src.close();
    }
  }
});

test(`${RUNS} cold runs of the sample release: signing operations = unique PEs, every action what happened in that run`, async () => {
  const unique = new Set(peOf.values()).size;
  assert.equal(unique, 7, 'the sample release holds 7 distinct PEs');
  for (let run = 1; run <= RUNS; run++) {
    const dir = tempDir();
    const p = await Pipeline.create({ config, threads: 2, cache: newCache(join(dir, 'cache')) });
    try {
      const out = join(dir, 'out');
      const { request, base, source } = await loadReleaseRequest(RELEASE, { excludeDir: out });
      const locales = resolveRequest(request, base, out, '.');
      const rm = await signRelease({
        signer: p,
        release: request.release,
        source,
        locales,
        outDir: out,
        profile: 'dev',
      });
      const where = `run ${run}`;
      assert.equal(rm.totals.failed, 0, where);
      assert.equal(p.stats().signOperations, unique, `${where}: signatures the pool made`);
      assert.equal(rm.totals.signOperations, unique, `${where}: reported signing operations`);
      assert.equal(rm.totals.signed, unique, where);
      assert.equal(rm.totals.cached, 0, `${where}: a cold run serves nothing from an earlier one`);
      assert.equal(rm.totals.shared, peOf.size - unique, where);
      // Per PE: signed once in the whole release, shared everywhere else.
      const actions = new Map<string, string[]>();
      for (const l of locales) {
        const m = JSON.parse(readFileSync(manifestPath(l.output), 'utf8')) as LocaleManifest;
        const count = (a: string): number => m.entries.filter((e) => e.action === a).length;
        assert.equal(m.totals.signed, count('signed'), `${where} ${l.locale}`);
        assert.equal(m.totals.shared, count('shared'), `${where} ${l.locale}`);
        assert.equal(m.totals.signOperations, m.totals.signed, `${where} ${l.locale}`);
        for (const e of m.entries) {
          const pe = peOf.get(`${l.input}\0${e.name}`);
          if (!pe) {
            assert.equal(e.action, 'passthrough', `${where} ${l.locale} ${e.name}`);
            continue;
          }
          actions.set(pe, [...(actions.get(pe) ?? []), `${l.locale}:${e.name}:${e.action}`]);
        }
      }
      assert.equal(actions.size, unique, where);
      for (const [pe, list] of actions) {
        const signed = list.filter((a) => a.endsWith(':signed'));
        assert.equal(signed.length, 1, `${where}: PE ${pe.slice(0, 12)} signed once: ${list.join(', ')}`);
        assert.ok(
          list.every((a) => /:(signed|shared)$/.test(a)),
          `${where}: PE ${pe.slice(0, 12)}: ${list.join(', ')}`,
        );
      }
    } finally {
      await p.close();
    }
  }
});

test('an entry read from the cache while this run’s work put it there is recorded as made in this run, not cached', async () => {
  const key = 'k'.repeat(64);
  const ledger = new RunLedger();
  const slot = Buffer.alloc(4);
  const counters = newCounters();
  // The store's ranged read lands the bytes, and meanwhile the scheduler's prefetch (for another
  // locale) finishes the same key: it is recorded in the run ledger before its cache put.
  const ranged = {
    readInto: async (_k: string, target: Uint8Array, _d: unknown, onRead?: () => void) => {
      target.set([1, 2, 3, 4]);
      onRead?.();
      ledger.recordWork(key, '/other/locale.mar', {
        made: true,
        produced: { bytes: Buffer.from([1, 2, 3, 4]), sha256: 'x' },
        stored: true,
      });
      return { sha256: 'abcd' };
    },
  };
  const ctx = { store: { ranged }, side: { digest: () => undefined }, counters } as unknown as SigningContext;
  const entry = { index: 0, name: 'uninstall/helper.exe', offset: 0, size: 4 };
  const out = await resolveEntry(
    { ctx, ledger, input: '/fr/complete.mar', skipInvalid: false, dryRun: false } as unknown as LocaleInput,
    { kind: 'sign', entry, key, codec: { codec: 'bz2', level: 9 }, codecKey: 'bz2', inputSha256: 'i' },
    slot,
  );
  assert.equal(await out.verified, true);
  assert.equal(out.record.action, 'shared');
  assert.equal(counters.hits, 1);
});
