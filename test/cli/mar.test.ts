import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  readFileSync,
  readdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { MarWriter } from '../../src/mar/writer.js';
import { bz2WithZeros } from '../codecs/helpers.js';
import { PROJECT_ROOT, SHARED_SKIP, TSX_IMPORT, peerMar, runCli, tempDir } from '../helpers/env.js';
import { marTestKeys, writeTestMar } from '../helpers/mar-keys.js';
import { rawMar } from '../formats/mar/raw-mar.js';

const bad = (n: string) => join(PROJECT_ROOT, 'fixtures', 'mar', 'bad', n);

test('marsign mar list prints what mardor `mar -t` prints', { skip: SHARED_SKIP }, async () => {
  const r = await runCli(['mar', 'list', peerMar('build-mar/test-bz2.mar')]);
  assert.equal(r.code, 0, r.stderr);
  // mardor cli.py do_list: '{:7s} {:7s} {:7s}' then '{:<7d} {:04o}    {}' per entry.
  assert.equal(
    r.stdout,
    [
      'SIZE    MODE    NAME   ',
      '141     0664    update.manifest',
      '76      0664    defaults/pref/channel-prefs.js',
      '76      0664    Contents/MacOS/defaults/pref/channel-prefs.js',
      '152     0664    update-settings.ini',
      '152     0664    Contents/MacOS/update-settings.ini',
      '',
    ].join('\n'),
  );
});

test('marsign mar list --verbose adds the -T header, offsets and codecs', { skip: SHARED_SKIP }, async () => {
  const r = await runCli(['mar', 'list', '--verbose', peerMar('firefox-libmar/multiple_file.mar')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Signature block found with 0 signature$/m);
  assert.match(r.stdout, /^ {4}- MAR channel name: @MAR_CHANNEL_ID@$/m);
  assert.match(r.stdout, /^ {4}- Product version: 13\.0a1$/m);
  assert.match(r.stdout, /^1 +0666 +128 +none +1_byte_file$/m);
  assert.match(r.stdout, /^512 +0666 +129 +none +binary_data_file$/m);
});

test('marsign mar list --json gives entries with offsets, octal modes and codecs', async () => {
  const dir = tempDir();
  const text = new TextEncoder().encode('some text\n'.repeat(50));
  const xz = new Uint8Array(execFileSync('xz', ['-c'], { input: text }));
  const bz2 = new Uint8Array(execFileSync('bzip2', ['-c'], { input: text }));
  const mar = await writeTestMar(join(dir, 'codecs.mar'), {
    entries: [
      { name: 'a.xz', data: xz, flags: 0o666 },
      { name: 'b/c.bz2', data: bz2, flags: 0o755 },
      { name: 'raw', data: text, flags: 0o600 },
      { name: 'empty', data: new Uint8Array(0) },
    ],
    writer: { productInfo: { channel: 'xpcshell-test', version: '0' } },
  });
  const r = await runCli(['mar', 'list', '--json', mar]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  // Data starts after the 20-byte header, the section count and libmar's 104-byte product information.
  const at = [128, 128 + xz.length, 128 + xz.length + bz2.length, 128 + xz.length + bz2.length + text.length];
  assert.deepEqual(j.entries, [
    { name: 'a.xz', offset: at[0], size: xz.length, flags: 0o666, mode: '0666', codec: 'xz' },
    { name: 'b/c.bz2', offset: at[1], size: bz2.length, flags: 0o755, mode: '0755', codec: 'bz2' },
    { name: 'raw', offset: at[2], size: text.length, flags: 0o600, mode: '0600', codec: 'none' },
    { name: 'empty', offset: at[3], size: 0, flags: 0o644, mode: '0644', codec: 'none' },
  ]);
  assert.deepEqual(j.productInfo, { channel: 'xpcshell-test', version: '0', padded: true });
});

test('marsign mar info shows style, sizes, signatures, sections, product info', async () => {
  const dir = tempDir();
  const [k] = marTestKeys(dir, [2048]);
  const signed = await writeTestMar(join(dir, 'signed.mar'), {
    keys: [k!.key],
    entries: [{ name: 'binary_data_file', data: new Uint8Array(512).fill(1), flags: 0o666 }],
    writer: { productInfo: undefined, additionalHeader: false },
  });
  const r = await runCli(['mar', 'info', '--json', signed]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.style, 'modern');
  assert.equal(j.fileSize, readFileSync(signed).length);
  assert.deepEqual(j.signatures, [
    { algorithmId: 2, length: 256, offset: 28, algorithm: 'RSA-PKCS1-SHA384' },
  ]);
  assert.equal(j.hasAdditionalHeader, false);
  assert.equal(j.entryCount, 1);
  assert.equal(j.storedBytes, 512);
  const old = join(dir, 'old.mar');
  writeFileSync(old, rawMar({ style: 'old', entries: [{ name: 'f', data: new Uint8Array(512) }] }));
  const h = await runCli(['mar', 'info', old]);
  assert.equal(h.code, 0, h.stderr);
  assert.match(h.stdout, /style +old \(no signature block\)/);
  assert.match(h.stdout, /entries +1 \(512 bytes stored, data at 8, index at 520\)/);
});

test('hostile MARs: exit 2 with `marsign: CODE: reason`; --lenient lists an unsafe name', async () => {
  const name = await runCli(['mar', 'list', bad('MAR_BAD_NAME.absolute.mar')]);
  assert.equal(name.code, 2);
  assert.match(
    name.stderr,
    /^marsign: MAR_BAD_NAME: unsafe entry name "\/etc\/passwd": absolute path \(at offset 149\)$/m,
  );
  assert.equal(name.stdout, '');
  const lenient = await runCli(['mar', 'list', '--lenient', bad('MAR_BAD_NAME.absolute.mar')]);
  assert.equal(lenient.code, 0, lenient.stderr);
  assert.match(lenient.stdout, /^5 +0644 +\/etc\/passwd$/m);
  const json = await runCli(['mar', 'info', '--json', bad('MAR_FILE_SIZE_MISMATCH.mar')]);
  assert.equal(json.code, 2);
  assert.equal(JSON.parse(json.stdout).error.code, 'MAR_FILE_SIZE_MISMATCH');
});

test(
  "margo's miniMarB.mar: exit 2 (absolute name), --lenient lists it; manipulated_signed.mar: size mismatch",
  { skip: SHARED_SKIP },
  async () => {
    const r = await runCli(['mar', 'list', peerMar('margo/miniMarB.mar')]);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^marsign: MAR_BAD_NAME: unsafe entry name "\/foo\/bar": absolute path \(at offset 397\)$/m,
    );
    const lenient = await runCli(['mar', 'list', '--lenient', peerMar('margo/miniMarB.mar')]);
    assert.equal(lenient.code, 0, lenient.stderr);
    assert.match(lenient.stdout, /^21 +1130 +\/foo\/bar$/m);
    const json = await runCli(['mar', 'info', '--json', peerMar('firefox-libmar/manipulated_signed.mar')]);
    assert.equal(json.code, 2);
    assert.equal(JSON.parse(json.stdout).error.code, 'MAR_FILE_SIZE_MISMATCH');
  },
);

test(
  'marsign mar create reproduces binary_data.mar; extract gets the file back',
  { skip: SHARED_SKIP },
  async () => {
    const dir = tempDir();
    const input = join(dir, 'binary_data_file');
    copyFileSync(peerMar('firefox-libmar/binary_data_file'), input);
    chmodSync(input, 0o666);
    const out = join(dir, 'out.mar');
    const c = await runCli([
      'mar',
      'create',
      out,
      input, // absolute: named by its basename
      '--channel',
      '@MAR_CHANNEL_ID@',
      '--product-version',
      '13.0a1',
    ]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await readFile(out), await readFile(peerMar('firefox-libmar/binary_data.mar')));
    const x = await runCli(['mar', 'extract', '--json', out, join(dir, 'x')]);
    assert.equal(x.code, 0, x.stderr);
    assert.deepEqual(JSON.parse(x.stdout).files, [{ name: 'binary_data_file', size: 512, mode: 0o666 }]);
    assert.deepEqual(await readFile(join(dir, 'x', 'binary_data_file')), await readFile(input));
  },
);

test('marsign mar create errors leave no output', async () => {
  const dir = tempDir();
  const input = join(tempDir(), '1_byte_file');
  writeFileSync(input, 'x');
  const r = await runCli([
    'mar',
    'create',
    join(dir, 'o.mar'),
    input,
    '--channel',
    'c',
    '--product-version',
    'v'.repeat(40),
  ]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^marsign: MAR_PRODUCT_INFO_INVALID: /m);
  const u = await runCli(['mar', 'create', join(dir, 'o.mar'), input, '--channel', 'c']);
  assert.equal(u.code, 2);
  assert.match(u.stderr, /--product-version/);
  assert.deepEqual(readdirSync(dir), []);
  assert.equal(existsSync(join(dir, 'o.mar')), false);
});

test('marsign mar --help lists the subcommands; each has its own help', async () => {
  const r = await runCli(['mar', '--help']);
  assert.equal(r.code, 0);
  for (const c of ['info', 'list', 'extract', 'create'])
    assert.match(r.stdout, new RegExp(`marsign mar ${c}`));
  const c = await runCli(['mar', 'create', '--help']);
  assert.equal(c.code, 0);
  for (const o of ['--compression', '--x86-filter', '--channel', '--product-version', '--json'])
    assert.ok(c.stdout.includes(o), o);
});

/** A MAR holding `entries` (name → stored bytes), written with our writer. */
async function marWith(path: string, entries: [string, Uint8Array][]): Promise<string> {
  const w = await MarWriter.create(path);
  for (const [name, data] of entries) await w.addEntry(name, 0o644, data);
  await w.finish();
  await w.commit();
  return path;
}

test('mar extract --decompress of a bz2 bomb (issue 10 item 4): CODEC_RATIO_TOO_HIGH at once, nothing left', async () => {
  const dir = tempDir();
  const mar = await marWith(join(dir, 'bomb.mar'), [['bomb.bin', bz2WithZeros(1.06 * 2 ** 30)]]);
  assert.ok(statSync(mar).size < 2000);
  const r = await runCli(['mar', 'extract', '--decompress', mar, join(dir, 'dest')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^marsign: CODEC_RATIO_TOO_HIGH: /m);
  assert.deepEqual(readdirSync(dir), ['bomb.mar'], 'no dest, no .dest.extract-* temp dir');
  // The flags: a looser ratio cap meets the size cap; a bad value is a usage error.
  const big = await runCli([
    'mar',
    'extract',
    '--decompress',
    '--max-ratio',
    '100000000',
    '--max-entry-size',
    String(64 << 20),
    mar,
    join(dir, 'dest'),
  ]);
  assert.equal(big.code, 2, big.stderr);
  assert.match(big.stderr, /^marsign: CODEC_OUTPUT_TOO_LARGE: /m);
  const bad = await runCli(['mar', 'extract', '--decompress', '--max-ratio', '0', mar, join(dir, 'dest')]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^marsign: USAGE: --max-ratio/m);
  assert.deepEqual(readdirSync(dir), ['bomb.mar']);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`mar extract --decompress stopped by ${signal} removes its temp dir and dies of the signal`, async () => {
    const dir = tempDir();
    // ~1 GiB of zeros with the ratio cap off: seconds of block-by-block decoding to interrupt.
    const mar = await marWith(join(dir, 'big.mar'), [['big.bin', bz2WithZeros(2 ** 30 - 2 ** 20)]]);
    const child = spawn(
      process.execPath,
      [
        '--import',
        TSX_IMPORT,
        join(PROJECT_ROOT, 'src/cli/main.ts'),
        ...['mar', 'extract', '--decompress', '--max-ratio', '100000000', mar, join(dir, 'dest')],
      ],
      { stdio: 'ignore' },
    );
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) =>
      child.on('exit', (code, sig) => resolve(sig ?? code)),
    );
    // Wait for the temp dir (made right before decoding starts), then stop the process.
    const deadline = Date.now() + 60_000;
    while (!readdirSync(dir).some((n) => n.startsWith('.dest.extract-'))) {
      assert.ok(Date.now() < deadline, 'the extraction never started');
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill(signal);
    assert.equal(await exited, signal);
    assert.deepEqual(readdirSync(dir), ['big.mar'], 'no temp dir, no dest');
  });
}
