/**
 * Smoke test of the benchmark's release generator (bench/lib/release-gen.ts), so it can't rot: a tiny
 * 2-locale release per codec reads back with readMar, shared entries are byte-identical across locales,
 * the locale entries differ, and the real `bzip2`/`xz` CLIs decode entries back to the corpus bytes with
 * the settings Mozilla uses.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import {
  generateRelease,
  pickCorpus,
  PRODUCT_CHANNEL,
  PRODUCT_VERSION,
} from '../../bench/lib/release-gen.js';
import { readEntryBytes, readMar, type MarInfo } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { peCorpus, tempDir } from '../helpers/env.js';

async function readBack(path: string): Promise<{ info: MarInfo; raw: Map<string, Uint8Array> }> {
  const s = await FileSource.open(path);
  try {
    const info = await readMar(s);
    const raw = new Map<string, Uint8Array>();
    for (const e of info.entries) raw.set(e.name, await readEntryBytes(s, e));
    return { info, raw };
  } finally {
    await s.close();
  }
}

function cli(cmd: string, args: string[], input: Uint8Array): Buffer {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr?.toString()}`);
  return r.stdout;
}

test('pickCorpus takes the largest files that fit, deterministically', () => {
  const files = [
    { path: '/c/a', rel: 'a', size: 50 },
    { path: '/c/b', rel: 'b', size: 30 },
    { path: '/c/c', rel: 'c', size: 30 },
    { path: '/c/d', rel: 'd', size: 15 },
  ];
  assert.deepEqual(
    pickCorpus(files, 100).map((f) => f.rel),
    ['a', 'b', 'd'],
  );
  assert.deepEqual(pickCorpus([...files].reverse(), 100), pickCorpus(files, 100));
});

for (const codec of ['bz2', 'xz'] as const) {
  test(`a 2-locale quick ${codec} release reads back with readMar`, { timeout: 300_000 }, async (t) => {
    const corpus = peCorpus();
    if (typeof corpus === 'string') return t.skip(corpus);
    const root = tempDir('marsign-bench-gen-');
    const rel = await generateRelease({ codec, locales: 2, mbPerLocale: 4, root });
    assert.equal(rel.cached, false);
    assert.deepEqual(
      rel.locales.map((l) => l.locale),
      ['en-US', 'de'],
    );
    assert.ok(rel.peBytesPerLocale > 3e6 && rel.peBytesPerLocale <= 4e6, `PE bytes ${rel.peBytesPerLocale}`);
    const spec = JSON.parse(readFileSync(rel.releaseJson, 'utf8')) as { locales: Record<string, string> };
    assert.deepEqual(spec.locales, { 'en-US': rel.locales[0]?.path, de: rel.locales[1]?.path });

    const [a, b] = await Promise.all(rel.locales.map((l) => readBack(l.path)));
    assert.ok(a && b);
    for (const { info } of [a, b]) {
      assert.equal(info.style, 'modern');
      assert.deepEqual(
        { channel: info.productInfo?.channel, version: info.productInfo?.version },
        { channel: PRODUCT_CHANNEL, version: PRODUCT_VERSION },
      );
      assert.deepEqual(
        info.entries.map((e) => [e.name, e.flags]),
        rel.entries.map((e) => [e.name, e.flags]),
      );
    }
    assert.ok(a.raw.has('xul.dll') && a.raw.has('uninstall/helper.exe') && a.raw.has('browser/omni.ja'));
    for (const e of rel.entries) {
      const same = Buffer.from(a.raw.get(e.name)!).equals(b.raw.get(e.name)!);
      assert.equal(same, e.shared, `${e.name}: identical across locales should be ${e.shared}`);
    }

    // Independent check with the real CLIs: the stored streams decode to the corpus bytes.
    const decode = codec === 'bz2' ? ['bzip2', ['-dc']] : ['xz', ['-dc']];
    const xul = rel.entries.find((e) => e.name === 'xul.dll');
    assert.ok(xul?.source);
    // pe-corpus.sh lays files out as <root>/<group>/<file>.
    const corpusRoot = dirname(dirname(corpus[0]!));
    assert.ok(
      cli(decode[0] as string, decode[1] as string[], a.raw.get('xul.dll')!).equals(
        readFileSync(join(corpusRoot, xul.source)),
      ),
    );
    const helper = cli(decode[0] as string, decode[1] as string[], a.raw.get('uninstall/helper.exe')!);
    assert.equal(helper.subarray(0, 2).toString('latin1'), 'MZ');
    assert.equal(helper.length, rel.entries.find((e) => e.name === 'uninstall/helper.exe')?.size);
    if (codec === 'bz2') {
      assert.equal(Buffer.from(a.raw.get('xul.dll')!.subarray(0, 4)).toString('latin1'), 'BZh9');
    } else {
      // xz --robot -lvv: the block's filter chain and the stream check, as Mozilla writes them.
      const dir = tempDir('marsign-bench-gen-xz-');
      const f = join(dir, 'xul.xz');
      writeFileSync(f, a.raw.get('xul.dll')!);
      const list = spawnSync('xz', ['--robot', '-lvv', f]).stdout.toString();
      assert.match(list, /--x86 --lzma2=dict=8MiB/);
      assert.match(list, /CRC64/);
    }

    const again = await generateRelease({ codec, locales: 2, mbPerLocale: 4, root });
    assert.equal(again.cached, true);
    assert.equal(again.dir, rel.dir);
  });
}
