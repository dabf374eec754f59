/**
 * Zip through the pipeline (issue 9's second container): the sample release's target.zip and zips written
 * by Python (data descriptors, zip64, stored and deflate) are signed, then checked by independent tools —
 * `unzip -t`, `zipinfo -v`, Python's zipfile, osslsigncode — and against their inputs byte for byte.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { readZip, type ZipInfo } from '../../src/formats/zip/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { BufferSource } from '../../src/io/byte-source.js';
import { Pipeline, signRelease } from '../../src/pipeline/index.js';
import { readEntryContent } from '../../src/zip/file.js';
import { loadReleaseRequest, resolveRequest } from '../../src/release/request.js';
import { python, pyDump, unzipTest, zipinfoEntries } from '../formats/zip/tools.js';
import { PROJECT_ROOT, runCli, tempDir } from '../helpers/env.js';
import {
  CONFIG_PATH,
  fixtureMar,
  newCache,
  osslsigncodeVerify,
  readAll,
  RELEASE,
  TARGET_ZIP,
  ZIP_SIGNED,
} from './_support.js';

let config: LoadedConfig;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
});

async function zipOf(path: string): Promise<{ info: ZipInfo; src: BufferSource }> {
  const src = new BufferSource(readFileSync(path));
  return { info: await readZip(src), src };
}

/** Every check the issue lists for a signed zip against its input. */
async function checkSignedZip(input: string, output: string, signed: string[], dir: string): Promise<void> {
  const t = unzipTest(output);
  assert.ok(t.ok, t.output);
  // zipinfo -v: the same entries, in the same order, with the same metadata; signed entries differ only in
  // their CRC and sizes.
  const a = zipinfoEntries(input);
  const b = zipinfoEntries(output);
  assert.equal(b.entries.length, a.entries.length);
  const strip = (s: string): string =>
    s
      .replace(/32-bit CRC value \(hex\):.*\n/, '')
      .replace(/ compressed size:.*\n/, '')
      .replace(/uncompressed size:.*\n/, '')
      .replace(/(ID 0x0001 \(PKWARE 64-bit sizes\) and \d+ data bytes:)\n(\s+[0-9a-f ]+\.\n)+/, '$1\n');
  for (const [i, block] of a.entries.entries())
    assert.equal(strip(b.entries[i]!), strip(block), `entry #${i + 1}`);
  assert.equal(b.header, a.header);
  // Python reads every entry (zipfile checks each CRC); names and order as in the input.
  const py = pyDump([input, output]);
  assert.deepEqual(
    py[output]!.entries.map((e) => e.name),
    py[input]!.entries.map((e) => e.name),
  );
  assert.equal(py[output]!.comment, py[input]!.comment);
  // Unmatched entries: the very same compressed bytes; matched ones: PEs that osslsigncode verifies.
  const zin = await zipOf(input);
  const zout = await zipOf(output);
  for (const e of zin.info.entries) {
    const o = zout.info.entries.find((x) => x.name === e.name)!;
    assert.equal(o.index, e.index, `${e.name}: central order kept`);
    for (const f of [
      'dosDate',
      'dosTime',
      'externalAttributes',
      'internalAttributes',
      'flags',
      'method',
    ] as const)
      assert.equal(o[f], e[f], `${e.name}: ${f}`);
    assert.deepEqual(o.extra, e.extra, `${e.name}: extra field`);
    const inRaw = await zin.src.read(e.dataOffset, e.compressedSize);
    const outRaw = await zout.src.read(o.dataOffset, o.compressedSize);
    if (!signed.includes(e.name)) {
      assert.ok(Buffer.from(outRaw).equals(Buffer.from(inRaw)), `${e.name}: compressed bytes unchanged`);
      continue;
    }
    assert.ok(!Buffer.from(outRaw).equals(Buffer.from(inRaw)), `${e.name} was signed`);
    osslsigncodeVerify(await readEntryContent(zout.src, o), dir, e.name);
  }
}

test('target.zip: every PE signed (re-deflated or stored), every other entry copied byte for byte; unzip, zipinfo, Python and osslsigncode agree', async () => {
  const dir = tempDir();
  const p = await Pipeline.create({
    config,
    threads: 2,
    cache: newCache(join(dir, 'c')),
    outputCache: false,
  });
  try {
    const out = join(dir, 'target.zip');
    const m = await p.signLocale({ profile: 'dev', input: TARGET_ZIP, output: out });
    assert.equal(m.container, 'zip');
    assert.equal(m.totals.signed, ZIP_SIGNED.length);
    assert.deepEqual(
      m.entries.filter((e) => e.action === 'signed').map((e) => e.name),
      ZIP_SIGNED,
    );
    assert.ok(m.entries.find((e) => e.name === 'firefox/xul.dll')!.codec.startsWith('deflate:6:zlib='));
    assert.equal(m.entries.find((e) => e.name === 'firefox/uninstall/helper.exe')!.codec, 'none');
    await checkSignedZip(TARGET_ZIP, out, ZIP_SIGNED, dir);
    // Warm (entry cache): byte-identical, nothing signed, the CRCs come from the cache entries' facts.
    const again = join(dir, 'again.zip');
    const w = await p.signLocale({ profile: 'dev', input: TARGET_ZIP, output: again });
    assert.equal(w.totals.signOperations, 0);
    assert.equal(w.totals.cached, ZIP_SIGNED.length);
    assert.ok(readFileSync(again).equals(readFileSync(out)));
  } finally {
    await p.close();
  }
});

test('a release with the same PEs in target.zip and a MAR signs each once; the signed PEs are identical across the two', async () => {
  const dir = tempDir();
  const p = await Pipeline.create({ config, threads: 2, cache: newCache(join(dir, 'c')) });
  try {
    const out = join(dir, 'out');
    const { request, base, source } = await loadReleaseRequest(RELEASE, { excludeDir: out });
    request.locales = request.locales.filter((l) => l.locale === 'en-US' || l.locale === 'win64');
    const locales = resolveRequest(request, base, out, '.');
    const rm = await signRelease({
      signer: p,
      release: request.release,
      source,
      locales,
      outDir: out,
      profile: 'dev',
    });
    assert.equal(rm.totals.failed, 0);
    // en-US's 4 PEs (bz2) are the zip's 4 PEs (deflate/stored): 8 entries, 4 signatures.
    assert.equal(rm.totals.signOperations, 4);
    assert.equal(rm.totals.signed + rm.totals.shared, 8);
    const mar = await readAll(join(out, 'en-US', 'complete.mar'));
    const { decompress } = await import('../../src/codecs/index.js');
    const zout = await zipOf(join(out, 'win64', 'target.zip'));
    for (const name of ['firefox.exe', 'xul.dll', 'updater.exe', 'uninstall/helper.exe']) {
      const fromMar = Buffer.from(await decompress(mar.raw.get(name)!));
      const z = zout.info.entries.find((e) => e.name === `firefox/${name}`)!;
      const fromZip = Buffer.from(await readEntryContent(zout.src, z));
      assert.ok(fromZip.equals(fromMar), `${name}: the same signed bytes in the zip and the MAR`);
    }
    // The input MAR holds the same unsigned PE bytes the zip does (the fixture is built that way).
    const input = await readAll(fixtureMar('en-US'));
    const zin = await zipOf(TARGET_ZIP);
    const z = zin.info.entries.find((e) => e.name === 'firefox/xul.dll')!;
    assert.ok(
      Buffer.from(await readEntryContent(zin.src, z)).equals(
        Buffer.from(await decompress(input.raw.get('xul.dll')!)),
      ),
    );
  } finally {
    await p.close();
  }
});

test('zips written by Python: data descriptors, forced zip64, stored and deflate PEs; signed and read back by every tool', async () => {
  const dir = tempDir();
  const pe = (name: string, arch: 'x86' | 'x64'): string => {
    const f = join(dir, name);
    writeFileSync(f, buildPe({ arch, kind: name.endsWith('.dll') ? 'dll' : 'exe', name }));
    return f;
  };
  const files = [pe('a.exe', 'x64'), pe('b.dll', 'x86'), pe('c.exe', 'x86')];
  python(
    String.raw`
import io, sys, zipfile
out, a, b, c = sys.argv[1:5]
class NoSeek(io.RawIOBase):
    def __init__(s): s.buf = bytearray()
    def writable(s): return True
    def write(s, x): s.buf += x; return len(x)
    def seekable(s): return False
def zi(name):
    i = zipfile.ZipInfo(name, date_time=(2025, 3, 4, 5, 6, 8)); i.external_attr = 0o100755 << 16; return i
ns = NoSeek()
with zipfile.ZipFile(ns, 'w', compression=zipfile.ZIP_DEFLATED) as z:
    z.comment = b'python streamed'
    with z.open(zi('bin/a.exe'), 'w') as f: f.write(open(a, 'rb').read())
    with z.open(zi('bin/b.dll'), 'w', force_zip64=True) as f: f.write(open(b, 'rb').read())
    with z.open(zi('readme.txt'), 'w') as f: f.write(b'not signed\n' * 50)
open(out + '/stream.zip', 'wb').write(ns.buf)
with zipfile.ZipFile(out + '/zip64.zip', 'w') as z:
    with z.open(zi('c.exe'), 'w', force_zip64=True) as f: f.write(open(c, 'rb').read())
    z.writestr(zi('stored/a.exe'), open(a, 'rb').read(), compress_type=zipfile.ZIP_STORED)
`,
    [dir, ...files],
  );
  const p = await Pipeline.create({
    config,
    threads: 2,
    cache: newCache(join(dir, 'cache')),
    outputCache: false,
  });
  try {
    for (const [name, signed] of [
      ['stream.zip', ['bin/a.exe', 'bin/b.dll']],
      ['zip64.zip', ['c.exe', 'stored/a.exe']],
    ] as const) {
      const input = join(dir, name);
      const out = join(dir, `signed-${name}`);
      const m = await p.signLocale({ profile: 'dev', input, output: out });
      assert.equal(m.totals.signed + m.totals.shared + m.totals.cached, signed.length, name);
      await checkSignedZip(input, out, [...signed], dir);
    }
  } finally {
    await p.close();
  }
});

test('the CLI takes a zip by its content, whatever its name; a hostile zip is a typed error and writes nothing', async () => {
  const dir = tempDir();
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
  const renamed = join(dir, 'build.bin');
  writeFileSync(renamed, readFileSync(TARGET_ZIP));
  const out = join(dir, 'signed.bin');
  const r = await runCli(['sign-locale', renamed, '-o', out, '-c', CONFIG_PATH, '-p', 'dev', '--json'], {
    env,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { container: string }).container, 'zip');
  assert.ok(unzipTest(out).ok);
  const bad = join(PROJECT_ROOT, 'fixtures', 'zip', 'bad', 'ZIP_ENTRY_OVERLAP.zip');
  const badOut = join(dir, 'bad.zip');
  const b = await runCli(['sign-locale', bad, '-o', badOut, '-c', CONFIG_PATH, '-p', 'dev'], { env });
  assert.equal(b.code, 2);
  assert.match(b.stderr, /^marsign: ZIP_ENTRY_OVERLAP: /m);
  assert.deepEqual(
    (await import('node:fs')).readdirSync(dir).filter((f) => f.startsWith('bad') || f.includes('.tmp')),
    [],
  );
});
