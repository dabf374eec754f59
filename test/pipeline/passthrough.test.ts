/**
 * Passthrough entries are checked before the container is signed (issue 10 item 6): an entry the policy
 * does not sign is decoded whole (bz2/xz for MAR; inflate + CRC-32 against the headers for zip) in the
 * pool, so a MAR signature never vouches for an entry the updater cannot unpack. Each unique stored blob
 * is checked once across locales and runs (a marker in the cache). Every fixture is generated here.
 */
import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { crc32, deflateRawSync } from 'node:zlib';
import { compress } from '../../src/codecs/index.js';
import type { CodecSettings } from '../../src/codecs/types.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { MarWriter } from '../../src/mar/writer.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { rawZip } from '../formats/zip/raw-zip.js';
import { runCli, tempDir } from '../helpers/env.js';
import { BZ2, CONFIG_PATH, KEYS, newCache, XZ_BCJ } from './_support.js';

let config: LoadedConfig;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
});

/** Text-like data that compresses well (a passthrough entry: not a PE, not matched by the policy). */
function textOf(seed: number, size = 300_000): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < size; i++) {
    const line = `line ${i} of resource ${seed}: ${'abcdefghij'.repeat((i * 7 + seed) % 9)}\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

/** Flip bytes in the middle of a compressed stream (its header stays readable: the codec is sniffed). */
function corrupted(stored: Uint8Array): Uint8Array {
  const out = Buffer.from(stored);
  const mid = Math.floor(out.length / 2);
  for (let i = mid; i < mid + 16; i++) out[i] = out[i]! ^ 0x5a;
  return out;
}

/** A MAR with one signable PE and the given passthrough entries as stored bytes. */
async function marWith(path: string, stored: { name: string; bytes: Uint8Array }[]): Promise<void> {
  const w = await MarWriter.create(path, { productInfo: { channel: 'test-channel', version: '1.0' } });
  try {
    await w.addEntry(
      'firefox.exe',
      0o755,
      await compress(buildPe({ arch: 'x64', kind: 'exe', name: 'pt' }), BZ2),
    );
    for (const s of stored) await w.addEntry(s.name, 0o644, s.bytes);
    await w.finish();
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** Nothing of the output left behind: no output, no manifest, no temp file. */
function assertNoOutput(dir: string, out: string): void {
  assert.ok(!existsSync(out), 'no output file');
  assert.ok(!existsSync(`${out}.manifest.json`), 'no manifest');
  const leftovers = readdirSync(dir).filter((n) => n.includes('.tmp'));
  assert.deepEqual(leftovers, [], 'no temp files');
}

interface Refusal {
  code?: string;
  message: string;
  details?: Record<string, unknown>;
}

async function refused(p: Promise<unknown>, entry: string): Promise<Refusal> {
  let err: Refusal | undefined;
  try {
    await p;
  } catch (e) {
    err = e as Refusal;
  }
  assert.ok(err, `a corrupt passthrough entry (${entry}) must fail the locale`);
  assert.match(err.message, new RegExp(entry.replace(/\./g, '\\.')), 'the error names the entry');
  assert.equal(err.details?.entry, entry);
  assert.equal(err.details?.check, 'passthrough');
  return err;
}

describe('corrupt passthrough entries are refused before the container is signed', () => {
  const dir = tempDir();
  let pipeline: Pipeline;
  before(async () => {
    pipeline = await Pipeline.create({ config, threads: 2, cache: newCache(join(dir, 'cache')) });
  });
  after(() => pipeline.close());

  for (const [label, codec] of [
    ['bz2', BZ2],
    ['xz', XZ_BCJ],
  ] as [string, CodecSettings][]) {
    test(`MAR with a corrupt ${label} non-PE entry: refused naming it, no output; opted out: signed, recorded unverified`, async () => {
      const input = join(dir, `corrupt-${label}.mar`);
      const good = await compress(textOf(1), codec);
      await marWith(input, [
        { name: 'defaults/pref/channel-prefs.js', bytes: good },
        { name: 'omni.ja', bytes: corrupted(await compress(textOf(2), codec)) },
      ]);
      const out = join(dir, `corrupt-${label}.out.mar`);
      const err = await refused(pipeline.signLocale({ profile: 'dev', input, output: out }), 'omni.ja');
      assert.match(String(err.code), /^(CODEC_|ENTRY_)/, `a codec error code, got ${err.code}`);
      assertNoOutput(dir, out);

      // --skip-invalid does not let it through either: skipping would sign over it all the same.
      await refused(
        pipeline.signLocale({ profile: 'dev', input, output: out, skipInvalid: true }),
        'omni.ja',
      );
      assertNoOutput(dir, out);

      // The opt-out signs it as before, and the manifest says nothing was checked.
      const m = await pipeline.signLocale({ profile: 'dev', input, output: out, verifyPassthrough: false });
      assert.ok(existsSync(out));
      assert.equal(m.passthroughVerified, false);
      const onDisk = JSON.parse(readFileSync(`${out}.manifest.json`, 'utf8')) as typeof m;
      assert.equal(onDisk.passthroughVerified, false);
      for (const e of onDisk.entries.filter((x) => x.action === 'passthrough'))
        assert.equal(e.check, 'unchecked');
      assert.ok((await verifyMar(out, [join(KEYS, 'mar.cert.pem')])).valid);
    });
  }

  test('zip with a bad CRC-32 in a non-PE entry, and one with corrupt deflate data: refused naming it', async () => {
    const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'ptz' });
    const cases: [string, Parameters<typeof rawZip>[0]['entries'][number]][] = [
      [
        'bad-crc',
        { name: 'res/strings.txt', content: textOf(3), method: 8, crc32: (crc32(textOf(3)) ^ 1) >>> 0 },
      ],
      [
        'bad-crc-stored',
        { name: 'res/strings.txt', content: textOf(4), method: 0, crc32: (crc32(textOf(4)) ^ 1) >>> 0 },
      ],
      [
        'bad-deflate',
        { name: 'res/strings.txt', content: textOf(5), method: 8, data: corruptedDeflate(textOf(5)) },
      ],
    ];
    for (const [label, entry] of cases) {
      const input = join(dir, `${label}.zip`);
      writeFileSync(input, rawZip({ entries: [{ name: 'app/firefox.exe', content: pe, method: 8 }, entry] }));
      const out = join(dir, `${label}.out.zip`);
      const err = await refused(
        pipeline.signLocale({ profile: 'dev', input, output: out }),
        'res/strings.txt',
      );
      if (label.startsWith('bad-crc')) assert.equal(err.code, 'ENTRY_CORRUPT', label);
      assertNoOutput(dir, out);
      const m = await pipeline.signLocale({ profile: 'dev', input, output: out, verifyPassthrough: false });
      assert.equal(m.passthroughVerified, false, label);
      assert.ok(existsSync(out), label);
    }
  });
});

/** Raw deflate of `data` with bytes flipped inside (the stream no longer decodes, or to other bytes). */
function corruptedDeflate(data: Uint8Array): Uint8Array {
  return corrupted(deflateRawSync(data));
}

describe('valid passthrough entries: checked once per unique blob, outputs unchanged', () => {
  const dir = tempDir();
  const cacheRoot = join(dir, 'cache');
  const secret = Buffer.alloc(32, 9);
  const shared = { name: 'omni.ja', codec: XZ_BCJ };
  let blob: Uint8Array;
  let bz2Blob: Uint8Array;
  const inputs = { a: join(dir, 'a.mar'), b: join(dir, 'b.mar') };
  before(async () => {
    blob = await compress(textOf(10), shared.codec);
    bz2Blob = await compress(textOf(11), BZ2);
    await marWith(inputs.a, [
      { name: shared.name, bytes: blob },
      { name: 'chrome.manifest', bytes: bz2Blob },
      { name: 'stored.txt', bytes: Buffer.from('not compressed at all\n') },
    ]);
    // Another locale: the same omni.ja bytes, another entry of its own.
    await marWith(inputs.b, [
      { name: shared.name, bytes: blob },
      { name: 'chrome.manifest', bytes: await compress(textOf(12), BZ2) },
    ]);
  });

  test('output byte-identical with the check on and off; a second locale does not decode the shared blob again', async () => {
    const p = await Pipeline.create({
      config,
      threads: 2,
      cache: newCache(cacheRoot, secret),
      outputCache: false,
    });
    try {
      const on = join(dir, 'a.on.mar');
      const ma = await p.signLocale({ profile: 'dev', input: inputs.a, output: on });
      assert.equal(ma.passthroughVerified, true);
      const checks = Object.fromEntries(ma.entries.map((e) => [e.name, e.check]));
      assert.deepEqual(checks, {
        'firefox.exe': undefined,
        'omni.ja': 'decoded',
        'chrome.manifest': 'decoded',
        'stored.txt': 'decoded',
      });
      assert.equal(ma.totals.passthroughDecoded, 3);
      assert.deepEqual(
        p.stats().passthrough,
        { decoded: 2, cached: 0 },
        'two pool decodes (the stored entry needs none)',
      );

      const off = join(dir, 'a.off.mar');
      const moff = await p.signLocale({
        profile: 'dev',
        input: inputs.a,
        output: off,
        verifyPassthrough: false,
      });
      assert.equal(moff.passthroughVerified, false);
      assert.ok(readFileSync(on).equals(readFileSync(off)), 'the check only reads: same output bytes');

      const mb = await p.signLocale({ profile: 'dev', input: inputs.b, output: join(dir, 'b.mar.out') });
      assert.equal(mb.passthroughVerified, true);
      assert.equal(mb.entries.find((e) => e.name === 'omni.ja')!.check, 'cached');
      assert.equal(mb.entries.find((e) => e.name === 'chrome.manifest')!.check, 'decoded');
      assert.deepEqual(
        p.stats().passthrough,
        { decoded: 3, cached: 1 },
        'omni.ja decoded once for both locales',
      );
    } finally {
      await p.close();
    }
    // A marker per checked blob is in the cache.
    assert.equal(markers(cacheRoot).length, 3);
  });

  test('a later run finds the markers (no decode); a marker planted as a symlink or forged is not a pass', async () => {
    const p = await Pipeline.create({
      config,
      threads: 2,
      cache: newCache(cacheRoot, secret),
      outputCache: false,
    });
    try {
      const m = await p.signLocale({ profile: 'dev', input: inputs.a, output: join(dir, 'a.again.mar') });
      assert.equal(m.passthroughVerified, true);
      assert.deepEqual(p.stats().passthrough, { decoded: 0, cached: 2 });
      assert.equal(m.totals.passthroughDecoded, 1, 'only the stored entry (a size check, no marker)');
    } finally {
      await p.close();
    }
    // Move each valid marker out of the cache and link it back in: the store must not follow the links.
    const outside = join(dir, 'outside');
    mkdirSync(outside, { recursive: true });
    for (const path of markers(cacheRoot)) {
      const moved = join(outside, path.split('/').pop()!);
      renameSync(path, moved);
      symlinkSync(moved, path);
    }
    const p2 = await Pipeline.create({
      config,
      threads: 2,
      cache: newCache(cacheRoot, secret),
      outputCache: false,
    });
    try {
      const m = await p2.signLocale({ profile: 'dev', input: inputs.a, output: join(dir, 'a.linked.mar') });
      assert.equal(m.entries.find((e) => e.name === 'omni.ja')!.check, 'decoded');
      assert.deepEqual(p2.stats().passthrough, { decoded: 2, cached: 0 }, 'linked markers are misses');
    } finally {
      await p2.close();
    }
    // The links met were replaced by regular files (the store's own), their targets untouched; b.mar's
    // marker, not looked up by this run, is still the planted link.
    assert.deepEqual(
      markers(cacheRoot).map(isLink).sort(),
      [false, false, true],
      'two links replaced, one not met',
    );
    assert.equal(readdirSync(outside).length, 3);

    // A forged marker (no secret): another secret's cache sees every marker as bad, and decodes.
    const p3 = await Pipeline.create({
      config,
      threads: 2,
      cache: newCache(cacheRoot, Buffer.alloc(32, 1)),
      outputCache: false,
    });
    try {
      await p3.signLocale({ profile: 'dev', input: inputs.a, output: join(dir, 'a.forged.mar') });
      assert.deepEqual(p3.stats().passthrough, { decoded: 2, cached: 0 });
    } finally {
      await p3.close();
    }
  });

  test('sign-release: one decode per unique blob across its locales; each locale line says it was checked', async () => {
    const p = await Pipeline.create({
      config,
      threads: 2,
      cache: newCache(join(dir, 'cache-release'), secret),
    });
    try {
      const out = join(dir, 'release-out');
      const locales = (['a', 'b'] as const).map((l) => ({
        locale: l,
        input: inputs[l],
        outputDir: join(out, l),
        output: join(out, l, 'complete.mar'),
      }));
      const rm = await signRelease({
        signer: p,
        release: 'pt',
        source: dir,
        locales,
        outDir: out,
        profile: 'dev',
      });
      assert.equal(rm.totals.failed, 0);
      assert.deepEqual(
        rm.locales.map((l) => l.passthroughVerified),
        [true, true],
      );
      // a: omni.ja, chrome.manifest (+ a stored entry, no decode); b: its own chrome.manifest.
      assert.equal(p.stats().passthrough.decoded, 3, 'omni.ja, shared by both locales, decoded once');
      const off = await signRelease({
        signer: p,
        release: 'pt-off',
        source: dir,
        locales: locales.map((l) => ({ ...l, outputDir: `${l.outputDir}-off`, output: `${l.output}-off` })),
        outDir: `${out}-off`,
        profile: 'dev',
        verifyPassthrough: false,
      });
      assert.deepEqual(
        off.locales.map((l) => l.passthroughVerified),
        [false, false],
      );
    } finally {
      await p.close();
    }
  });

  test('the locale-output tier never serves an unchecked output to a run that checks', async () => {
    const root = join(dir, 'cache-tier');
    const p = await Pipeline.create({ config, threads: 2, cache: newCache(root, secret), outputCache: true });
    try {
      const first = await p.signLocale({
        profile: 'dev',
        input: inputs.b,
        output: join(dir, 'b1.mar'),
        verifyPassthrough: false,
      });
      assert.equal(first.outputCache, 'miss');
      const checked = await p.signLocale({ profile: 'dev', input: inputs.b, output: join(dir, 'b2.mar') });
      assert.equal(checked.outputCache, 'miss', 'an output made unchecked is not served to a checking run');
      assert.equal(checked.passthroughVerified, true);
      const served = await p.signLocale({ profile: 'dev', input: inputs.b, output: join(dir, 'b3.mar') });
      assert.equal(served.outputCache, 'hit');
      assert.equal(served.passthroughVerified, true);
      assert.equal(served.totals.passthroughDecoded, 0, 'nothing decoded by a served output');
    } finally {
      await p.close();
    }
  });
});

describe('CLI: sign-locale refuses a corrupt passthrough entry; --no-verify-passthrough opts out', () => {
  const dir = tempDir();
  test('exit status, message and output', async () => {
    const input = join(dir, 'c.mar');
    await marWith(input, [{ name: 'omni.ja', bytes: corrupted(await compress(textOf(20), BZ2)) }]);
    const out = join(dir, 'c.out.mar');
    const env = { MARSIGN_CACHE_DIR: join(dir, 'cache'), MARSIGN_AUDIT_LOG: join(dir, 'audit.jsonl') };
    const bad = await runCli(
      ['sign-locale', input, '-o', out, '-p', 'dev', '-c', CONFIG_PATH, '--no-progress'],
      { env },
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /omni\.ja/);
    assert.ok(!existsSync(out));
    const ok = await runCli(
      [
        'sign-locale',
        input,
        '-o',
        out,
        '-p',
        'dev',
        '-c',
        CONFIG_PATH,
        '--no-progress',
        '--no-verify-passthrough',
      ],
      { env },
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /NOT checked/);
    assert.ok(existsSync(out));
  });
});

function markers(root: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(root)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const n of readdirSync(join(root, d))) if (n.endsWith('.chk')) out.push(join(root, d, n));
  }
  return out;
}

function isLink(path: string): boolean {
  return lstatSync(path).isSymbolicLink();
}
