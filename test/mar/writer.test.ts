import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSign, createVerify } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { BufferSource } from '../../src/io/byte-source.js';
import { readMar, signableChunks, signableRanges } from '../../src/formats/mar/index.js';
import { MarWriter, type MarWriterOptions } from '../../src/mar/writer.js';
import { SHARED_SKIP, peerMar, tempDir } from '../helpers/env.js';
import { rawMar } from '../formats/mar/raw-mar.js';

const PIB = { channel: '@MAR_CHANNEL_ID@', version: '13.0a1' };
const key = (n: string): Promise<string> => readFile(peerMar(`keys/${n}.TEST-ONLY.key.pem`), 'utf8');
const pub = (n: string): Promise<string> => readFile(peerMar(`keys/${n}.pub.pem`), 'utf8');
const input = async (n: string): Promise<Uint8Array> =>
  new Uint8Array(await readFile(peerMar(`firefox-libmar/${n}`)));

async function build(
  out: string,
  opts: MarWriterOptions,
  files: string[],
  keys: string[] = [],
): Promise<Uint8Array> {
  const w = await MarWriter.create(out, opts);
  for (const f of files) await w.addEntry(f, 0o666, await input(f));
  const info = await w.finish();
  if (keys.length) {
    // Hash the signed stream chunk by chunk (small chunks, to cross range boundaries), as a signer would.
    const signers = keys.map(() => createSign('sha384'));
    for await (const chunk of w.signable(100)) for (const s of signers) s.update(chunk);
    const sigs = await Promise.all(signers.map(async (s, i) => new Uint8Array(s.sign(await key(keys[i]!)))));
    await w.setSignatures(sigs);
  }
  await w.commit();
  const bytes = new Uint8Array(await readFile(out));
  assert.equal(bytes.length, info.fileSize);
  assert.deepEqual(await readMar(new BufferSource(bytes)), info, 'finish() returns what readMar reads back');
  return bytes;
}

const cases: [string, MarWriterOptions, string[], string[]][] = [
  ['binary_data.mar', { productInfo: PIB }, ['binary_data_file'], []],
  ['multiple_file.mar', { productInfo: PIB }, ['0_sized_file', '1_byte_file', 'binary_data_file'], []],
  ['0_sized.mar', { productInfo: PIB }, ['0_sized_file'], []],
  [
    'signed_pib.mar',
    { productInfo: PIB, signatureSlots: [{ algorithmId: 2, length: 512 }] },
    ['binary_data_file'],
    ['mycert'],
  ],
  [
    'multiple_signed_pib.mar',
    { productInfo: PIB, signatureSlots: Array.from({ length: 3 }, () => ({ algorithmId: 2, length: 512 })) },
    ['binary_data_file'],
    ['mycert', 'mycert2', 'mycert3'],
  ],
  [
    'multiple_signed_pib_2.mar',
    { productInfo: PIB, signatureSlots: Array.from({ length: 3 }, () => ({ algorithmId: 2, length: 512 })) },
    ['binary_data_file'],
    ['mycert', 'mycert', 'mycert3'],
  ],
  [
    'signed_no_pib.mar',
    { additionalHeader: false, signatureSlots: [{ algorithmId: 2, length: 512 }] },
    ['binary_data_file'],
    ['mycert'],
  ],
];

for (const [ref, opts, files, keys] of cases) {
  test(
    `MarWriter reproduces ${ref} byte for byte${keys.length ? ` (signed with ${keys.join(', ')})` : ''}`,
    { skip: SHARED_SKIP },
    async () => {
      const dir = tempDir();
      const out = join(dir, ref);
      const bytes = await build(out, opts, files, keys);
      assert.deepEqual(bytes, await input(ref));
      assert.deepEqual(readdirSync(dir), [ref], 'no temp file left');
    },
  );
}

test(
  'signableChunks: peer signatures verify over our stream; the manipulated file does not',
  { skip: SHARED_SKIP },
  async () => {
    const check = async (rel: string, keys: string[], opts = {}): Promise<boolean[]> => {
      const bytes = new Uint8Array(await readFile(peerMar(rel)));
      const src = new BufferSource(bytes);
      const info = await readMar(src, opts);
      const verifiers = keys.map(() => createVerify('sha384'));
      for await (const c of signableChunks(src, info, 7)) for (const v of verifiers) v.update(c);
      return Promise.all(
        verifiers.map(async (v, i) => {
          const s = info.signatures[i]!;
          return v.verify(await pub(keys[i]!), bytes.subarray(s.offset, s.offset + s.length));
        }),
      );
    };
    assert.deepEqual(await check('firefox-libmar/signed_pib.mar', ['mycert']), [true]);
    assert.deepEqual(
      await check('firefox-libmar/multiple_signed_pib.mar', ['mycert', 'mycert2', 'mycert3']),
      [true, true, true],
    );
    assert.deepEqual(await check('firefox-libmar/signed_no_pib.mar', ['mycert']), [true]);
    assert.deepEqual(await check('firefox-updater/complete.mar', ['xpcshellCertificate']), [true]);
    assert.deepEqual(
      await check('firefox-libmar/manipulated_signed.mar', ['mycert'], { allowSizeMismatch: true }),
      [false],
    );
  },
);

test(
  'openssl verifies signed_pib.mar over the stream of signableRanges (independent check)',
  { skip: SHARED_SKIP },
  async () => {
    const bytes = new Uint8Array(await readFile(peerMar('firefox-libmar/signed_pib.mar')));
    const info = await readMar(new BufferSource(bytes));
    const ranges = signableRanges(info);
    assert.deepEqual(ranges, [
      { offset: 0, length: 28 },
      { offset: 540, length: 1193 - 540 },
    ]);
    const dir = tempDir();
    writeFileSync(
      join(dir, 'stream'),
      Buffer.concat(ranges.map((r) => bytes.subarray(r.offset, r.offset + r.length))),
    );
    const s = info.signatures[0]!;
    writeFileSync(join(dir, 'sig'), bytes.subarray(s.offset, s.offset + s.length));
    const out = execFileSync('openssl', [
      'dgst',
      '-sha384',
      '-verify',
      peerMar('keys/mycert.pub.pem'),
      '-signature',
      join(dir, 'sig'),
      join(dir, 'stream'),
    ]).toString();
    assert.match(out, /Verified OK/);
  },
);

test('signableRanges refuses an old-style MAR', async () => {
  const old = rawMar({ style: 'old', entries: [{ name: 'a', data: new Uint8Array(512) }] });
  const info = await readMar(new BufferSource(old));
  assert.throws(() => signableRanges(info), { code: 'MAR_NOT_SIGNABLE' });
});

test('MarWriter validates names, duplicates, slots and call order; abort leaves nothing', async () => {
  const dir = tempDir();
  const out = join(dir, 'x.mar');
  const w = await MarWriter.create(out, { signatureSlots: [{ algorithmId: 2, length: 512 }] });
  await assert.rejects(w.addEntry('../x', 0o644, new Uint8Array(1)), { code: 'MAR_BAD_NAME' });
  await assert.rejects(w.addEntry('/abs', 0o644, new Uint8Array(1)), { code: 'MAR_BAD_NAME' });
  await w.addEntry('a', 0o644, new Uint8Array(1));
  await assert.rejects(w.addEntry('a', 0o644, new Uint8Array(1)), { code: 'MAR_DUPLICATE_NAME' });
  assert.throws(() => w.signable(), { code: 'MAR_WRITER_STATE' });
  await w.finish();
  await assert.rejects(w.addEntry('b', 0o644, new Uint8Array(1)), { code: 'MAR_WRITER_STATE' });
  await assert.rejects(w.setSignatures([new Uint8Array(256)]), { code: 'MAR_SIGNATURE_SLOT_MISMATCH' });
  await assert.rejects(w.setSignatures([]), { code: 'MAR_SIGNATURE_SLOT_MISMATCH' });
  await w.abort();
  await w.abort();
  assert.deepEqual(readdirSync(dir), []);
  assert.equal(existsSync(out), false);

  await assert.rejects(MarWriter.create(out, { productInfo: { channel: 'c'.repeat(64), version: '1' } }), {
    code: 'MAR_PRODUCT_INFO_INVALID',
  });
  await assert.rejects(
    MarWriter.create(out, {
      signatureSlots: Array.from({ length: 9 }, () => ({ algorithmId: 2, length: 512 })),
    }),
    { code: 'MAR_TOO_MANY_SIGNATURES' },
  );
  await assert.rejects(MarWriter.create(out, { signatureSlots: [{ algorithmId: 2, length: 4096 }] }), {
    code: 'MAR_SIGNATURE_TOO_LARGE',
  });
  const empty = await MarWriter.create(out);
  await assert.rejects(empty.finish(), { code: 'MAR_EMPTY_INDEX' });
  await empty.abort();
  assert.deepEqual(readdirSync(dir), []);
});

test('unsigned MarWriter output (signatureSlots: []) has a signature block with count 0, like libmar', async () => {
  const out = join(tempDir(), 'u.mar');
  const w = await MarWriter.create(out, { signatureSlots: [] });
  await w.addEntry('a/b.txt', 0o644, new TextEncoder().encode('hi'));
  await w.finish();
  await w.commit();
  const bytes = new Uint8Array(await readFile(out));
  assert.equal(new DataView(bytes.buffer, bytes.byteOffset).getUint32(16), 0);
  const info = await readMar(new BufferSource(bytes));
  assert.equal(info.style, 'modern');
  assert.equal(info.hasAdditionalHeader, true);
  assert.deepEqual(info.additionalSections, []);
  assert.deepEqual(info.entries, [{ name: 'a/b.txt', offset: 24, size: 2, flags: 0o644 }]);
});
