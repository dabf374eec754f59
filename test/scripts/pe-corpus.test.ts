/**
 * The corpus builder (test/helpers/pe-corpus.ts, scripts/pe-corpus.ts) and peCorpus()'s skip rule: header
 * classification checked against `osslsigncode`-signed synthetic PEs, the selection rules on a made-up
 * package listing, and "no apt package lists" (a private, empty apt state through $APT_CONFIG, no network)
 * giving exit 3 with the reason, a skip for a user and a failure on CI.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parsePe } from '../../src/formats/pe/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { PROJECT_ROOT, TSX_IMPORT, tempDir } from '../helpers/env.js';
import { makePki } from '../helpers/pki.js';
import { peHeader, selectCorpus, type Candidate } from '../helpers/pe-corpus.js';

const dir = tempDir('marsign-pe-corpus-');

test('peHeader: PE32/PE32+, DLL flag, subsystem, signed; not a PE → undefined', () => {
  const pki = makePki({ dir });
  const cases = [
    ['x86', 'exe'],
    ['x64', 'dll'],
  ] as const;
  for (const [arch, kind] of cases) {
    const f = join(dir, `${arch}.${kind}`);
    const bytes = buildPe({ arch, kind, payload: new Uint8Array(2000) });
    writeFileSync(f, bytes);
    const h = peHeader(f);
    const subsystem = parsePe(bytes).subsystem; // the product's parser agrees
    assert.deepEqual(h, { pe32plus: arch === 'x64', dll: kind === 'dll', subsystem, signed: false }, f);
    execFileSync(
      'osslsigncode',
      ['sign', '-certs', pki.certPemPath, '-key', pki.keyPemPath, '-in', f, '-out', `${f}.s`],
      {
        stdio: 'pipe',
      },
    );
    assert.equal(peHeader(`${f}.s`)?.signed, true, `${f} signed by osslsigncode`);
  }
  const text = join(dir, 'mz.txt');
  writeFileSync(text, 'MZ' + 'x'.repeat(1000));
  assert.equal(peHeader(text), undefined);
});

test('selectCorpus: spread over wine sizes, every mingw DLL, signed EFI under the name of its twin', () => {
  const pe = { pe32plus: true, dll: true, subsystem: 3, signed: false };
  const c = (pkg: string, rel: string, size: number, signed = false): Candidate => ({
    pkg,
    rel,
    abs: `/x/${pkg}${rel}`,
    size,
    pe: { ...pe, signed },
  });
  const wine = Array.from({ length: 100 }, (_, i) =>
    c('libwine', `/usr/lib/wine/x86_64-windows/f${i}.dll`, 2000 + i * 10),
  );
  const all = [
    ...wine,
    c('libwine', '/usr/lib/wine/x86_64-windows/tiny.dll', 500), // under 1 KiB: left out
    c('libwine', '/usr/lib/wine/x86_64-windows/a.sys', 1500),
    c('libwine', '/usr/lib/wine/x86_64-windows/b.sys', 1600),
    c('libwine', '/usr/lib/wine/x86_64-windows/c.sys', 1700),
    c('gcc-mingw-w64-i686-win32-runtime', '/usr/lib/gcc/i686-w64-mingw32/12-win32/libssp-0.dll', 9),
    c('gcc-mingw-w64-i686-win32-runtime', '/usr/lib/gcc/i686-w64-mingw32/12-win32/adalib/libgnat-12.dll', 9),
    c('nsis-common', '/usr/share/nsis/Stubs/lzma-x86-ansi', 9),
    c('nsis-common', '/usr/share/nsis/Stubs/lzma_solid-x86-ansi', 9),
    c('shim-unsigned', '/usr/lib/shim/mmx64.efi', 9),
    c('shim-helpers-amd64-signed', '/usr/lib/shim/mmx64.efi.signed', 9, true),
    c('grub-efi-amd64-signed', '/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed', 9, true),
  ];
  const picks = selectCorpus(all);
  const paths = picks.map((p) => p.path);
  // 36 at evenly spaced sizes (a.sys is the smallest, f99.dll the largest), plus b.sys: the median .sys.
  assert.equal(paths.filter((p) => p.startsWith('wine64/')).length, 37);
  assert.ok(paths.includes('wine64/a.sys') && paths.includes('wine64/f99.dll'), 'smallest and largest');
  assert.ok(paths.includes('wine64/b.sys') && !paths.includes('wine64/c.sys'));
  assert.ok(!paths.includes('wine64/tiny.dll'), 'under 1 KiB');
  for (const p of ['mingw-i686/libssp-0.dll', 'mingw-i686/libgnat-12.dll', 'nsis/stub-lzma-x86-ansi.exe'])
    assert.ok(paths.includes(p), p);
  assert.ok(!paths.some((p) => p.includes('solid')));
  assert.ok(paths.includes('efi/mmx64.efi') && paths.includes('efi-signed/mmx64.efi'));
  assert.ok(!paths.some((p) => p.includes('gcdx64')), 'only grubx64 from grub-efi-amd64-signed');
  assert.deepEqual(selectCorpus([...all].reverse()), picks, 'independent of listing order');
});

test('no apt package lists: the script exits 3 with the reason; peCorpus() skips with it, but fails on CI', () => {
  // A private apt state with no lists: apt-get download cannot resolve anything and needs no network.
  const apt = join(dir, 'apt');
  for (const d of ['lists/partial', 'cache/archives/partial', 'etc/apt.conf.d', 'etc/preferences.d'])
    mkdirSync(join(apt, d), { recursive: true });
  writeFileSync(join(apt, 'etc', 'sources.list'), '');
  writeFileSync(
    join(apt, 'apt.conf'),
    [
      `Dir::State::Lists "${apt}/lists";`,
      `Dir::Cache "${apt}/cache";`,
      `Dir::Etc::SourceList "${apt}/etc/sources.list";`,
      `Dir::Etc::SourceParts "${apt}/etc/none";`,
      `Dir::Etc::Parts "${apt}/etc/apt.conf.d";`,
      `Dir::Etc::PreferencesParts "${apt}/etc/preferences.d";`,
      '',
    ].join('\n'),
  );
  const out = join(dir, 'corpus');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    APT_CONFIG: join(apt, 'apt.conf'),
    MARSIGN_CORPUS_DIR: out,
  };
  delete env.CI;
  delete env.MARSIGN_PE_CORPUS;
  // peCorpus() runs scripts/pe-corpus.ts, which exits 3 with the reason on stdout.
  const probe = `import(${JSON.stringify(join(PROJECT_ROOT, 'test/helpers/env.ts'))}).then((m) => console.log(JSON.stringify(m.peCorpus())))`;
  const skip = spawnSync(process.execPath, ['--import', TSX_IMPORT, '-e', probe], { env, encoding: 'utf8' });
  assert.equal(skip.status, 0, skip.stderr);
  assert.match(
    JSON.parse(skip.stdout),
    /^PE corpus unavailable: apt has no package lists for libwine .*\(run `apt-get update` as root once\).*\(scripts\/pe-corpus\.ts\)$/,
  );
  assert.equal(existsSync(out), false, 'nothing written');
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('.pe-corpus-build-') || n.endsWith('.lock')),
    [],
    'no build directory or lock left behind',
  );
  const ci = spawnSync(process.execPath, ['--import', TSX_IMPORT, '-e', probe], {
    env: { ...env, CI: 'true' },
    encoding: 'utf8',
  });
  assert.notEqual(ci.status, 0);
  assert.match(ci.stderr, /CI=true but the PE corpus unavailable: apt has no package lists/);
  const off = spawnSync(process.execPath, ['--import', TSX_IMPORT, '-e', probe], {
    env: { ...env, MARSIGN_PE_CORPUS: 'off' },
    encoding: 'utf8',
  });
  assert.equal(JSON.parse(off.stdout), 'PE corpus turned off by MARSIGN_PE_CORPUS=off');
});
