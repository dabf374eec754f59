import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { readMar, signableChunks } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { loadPemKey } from '../../src/keys/index.js';
import { MarWriter } from '../../src/mar/writer.js';
import { marSignatureSlots, signMarFile, signWriter } from '../../src/signing/mar-signer.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { SHARED_SKIP, peerMar, tempDir } from '../helpers/env.js';

const dir = tempDir('marsign-marsign-');
const key = (n: string) => loadPemKey(readFileSync(peerMar(`keys/${n}.TEST-ONLY.key.pem`)));
const libmar = (n: string) => peerMar(`firefox-libmar/${n}`);

/** The §8 signed stream of a MAR, written to a file for openssl. */
async function streamOf(path: string): Promise<{ stream: string; sigs: string[] }> {
  const src = await FileSource.open(path);
  try {
    const info = await readMar(src);
    const parts: Uint8Array[] = [];
    for await (const c of signableChunks(src, info)) parts.push(c);
    const stream = `${path}.stream`;
    writeFileSync(stream, Buffer.concat(parts));
    const sigs: string[] = [];
    for (const [i, s] of info.signatures.entries()) {
      const p = `${path}.sig${i}`;
      writeFileSync(p, await src.read(s.offset, s.length));
      sigs.push(p);
    }
    return { stream, sigs };
  } finally {
    await src.close();
  }
}

test(
  'known answer: binary_data.mar + mycert = signed_pib.mar, byte for byte',
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'signed_pib.mar');
    const info = await signMarFile(libmar('binary_data.mar'), out, {
      keys: [key('mycert')],
      algorithm: 'sha384',
    });
    assert.deepEqual(readFileSync(out), readFileSync(libmar('signed_pib.mar')));
    assert.deepEqual(
      info.signatures.map((s) => [s.algorithmId, s.length]),
      [[2, 512]],
    );
  },
);

test(
  'known answer: [mycert, mycert2, mycert3] = multiple_signed_pib.mar; [mycert, mycert, mycert3] = multiple_signed_pib_2.mar',
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'multi.mar');
    await signMarFile(libmar('binary_data.mar'), out, {
      keys: [key('mycert'), key('mycert2'), key('mycert3')],
      algorithm: 'sha384',
    });
    assert.deepEqual(readFileSync(out), readFileSync(libmar('multiple_signed_pib.mar')));
    await signMarFile(libmar('binary_data.mar'), out, {
      keys: [key('mycert'), key('mycert'), key('mycert3')],
      algorithm: 'sha384',
    });
    assert.deepEqual(readFileSync(out), readFileSync(libmar('multiple_signed_pib_2.mar')));
  },
);

test(
  're-signing replaces existing signatures (count and keys), in place',
  { skip: SHARED_SKIP },
  async () => {
    const f = join(dir, 'resign.mar');
    copyFileSync(libmar('multiple_signed_pib.mar'), f);
    await signMarFile(f, f, { keys: [key('mycert')], algorithm: 'sha384' });
    assert.deepEqual(
      readFileSync(f),
      readFileSync(libmar('signed_pib.mar')),
      'three signatures replaced by one',
    );
    await signMarFile(f, f, { keys: [key('mycert2')], algorithm: 'sha384' });
    assert.equal((await verifyMar(f, [peerMar('keys/mycert2.pub.pem')])).valid, true);
    assert.equal((await verifyMar(f, [peerMar('keys/mycert.pub.pem')])).valid, false);
  },
);

test(
  "an old-style MAR gets signmar's layout (no additional-section count) and verifies",
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'no_pib_signed.mar');
    const info = await signMarFile(libmar('no_pib.mar'), out, { keys: [key('mycert')], algorithm: 'sha384' });
    assert.equal(info.hasAdditionalHeader, false);
    assert.equal(info.dataStart, 540, 'content right after the signature, like signed_no_pib.mar');
    // signed_no_pib.mar was made from a 0666 copy of no_pib.mar (0664): only the mode and the
    // signature differ, so compare everything else.
    const ours = readFileSync(out);
    const theirs = readFileSync(peerMar('firefox-libmar/signed_no_pib.mar'));
    assert.equal(ours.length, theirs.length);
    assert.deepEqual(ours.subarray(0, 28), theirs.subarray(0, 28));
    assert.deepEqual(ours.subarray(540, 1052), theirs.subarray(540, 1052), 'entry data');
    assert.equal((await verifyMar(out, [peerMar('keys/mycert.pub.pem')])).valid, true);
  },
);

test(
  'product information is kept; xz entries are copied untouched (complete.mar)',
  { skip: SHARED_SKIP },
  async () => {
    const out = join(dir, 'complete.mar');
    await signMarFile(peerMar('firefox-updater/complete.mar'), out, {
      keys: [key('mycert3')],
      algorithm: 'sha384',
    });
    const a = await FileSource.open(peerMar('firefox-updater/complete.mar'));
    const b = await FileSource.open(out);
    try {
      const ia = await readMar(a);
      const ib = await readMar(b);
      assert.deepEqual(ib.productInfo, ia.productInfo);
      assert.deepEqual(
        ib.entries.map((e) => [e.name, e.size, e.flags]),
        ia.entries.map((e) => [e.name, e.size, e.flags]),
      );
      for (const [i, e] of ia.entries.entries()) {
        assert.deepEqual(await b.read(ib.entries[i]!.offset, e.size), await a.read(e.offset, e.size), e.name);
      }
    } finally {
      await a.close();
      await b.close();
    }
    assert.equal((await verifyMar(out, [peerMar('keys/mycert3.pub.pem')])).valid, true);
    // The original signature is gone, so xpcshellCertificate no longer verifies.
    assert.equal((await verifyMar(out, [peerMar('firefox-updater/xpcshellCertificate.der')])).valid, false);
  },
);

test(
  'openssl dgst -verify accepts our signatures over the signed stream (sha384 id 2, sha1 id 1)',
  { skip: SHARED_SKIP },
  async () => {
    for (const [alg, id] of [
      ['sha384', 2],
      ['sha1', 1],
    ] as const) {
      const out = join(dir, `openssl-${alg}.mar`);
      await signMarFile(libmar('multiple_file.mar'), out, {
        keys: [key('mycert2'), key('mycert3')],
        algorithm: alg,
      });
      const src = await FileSource.open(out);
      const info = await readMar(src);
      await src.close();
      assert.deepEqual(
        info.signatures.map((s) => s.algorithmId),
        [id, id],
      );
      const { stream, sigs } = await streamOf(out);
      for (const [i, n] of ['mycert2', 'mycert3'].entries()) {
        const r = execFileSync('openssl', [
          'dgst',
          `-${alg}`,
          '-verify',
          peerMar(`keys/${n}.pub.pem`),
          '-signature',
          sigs[i]!,
          stream,
        ]);
        assert.match(r.toString(), /Verified OK/, `${alg} signature ${i}`);
      }
      assert.throws(() =>
        execFileSync(
          'openssl',
          ['dgst', `-${alg}`, '-verify', peerMar('keys/mycert3.pub.pem'), '-signature', sigs[0]!, stream],
          { stdio: 'pipe' },
        ),
      );
    }
  },
);

test(
  'one pass: MarWriter with marSignatureSlots + signWriter gives a verifiable MAR',
  { skip: SHARED_SKIP },
  async () => {
    const keys = [key('mycert'), key('mycert2')];
    const out = join(dir, 'onepass.mar');
    const w = await MarWriter.create(out, {
      productInfo: { channel: 'test-channel', version: '1.0' },
      signatureSlots: marSignatureSlots(keys, 'sha384'),
    });
    await w.addEntry('a.txt', 0o644, new TextEncoder().encode('hello'));
    await w.addEntry('dir/b.bin', 0o755, new Uint8Array(1000).fill(7));
    await w.finish();
    const sigs = await signWriter(w, keys, 'sha384');
    await w.commit();
    assert.equal(sigs.length, 2);
    const r = await verifyMar(out, [peerMar('keys/mycert.pub.pem'), peerMar('keys/mycert2.pub.pem')]);
    assert.deepEqual(r, {
      valid: true,
      status: 'ok',
      signatures: [
        { index: 0, algorithmId: 2, valid: true, status: 'ok' },
        { index: 1, algorithmId: 2, valid: true, status: 'ok' },
      ],
      problems: [],
    });
  },
);

test("slots: one per key with the key's length; bad key lists are refused", () => {
  const k = loadPemKey(readFileSync(peerMar('keys/mycert.TEST-ONLY.key.pem')));
  assert.deepEqual(marSignatureSlots([k, k], 'sha1'), [
    { algorithmId: 1, length: 512 },
    { algorithmId: 1, length: 512 },
  ]);
  assert.throws(() => marSignatureSlots([], 'sha384'), { code: 'MAR_KEYS_INVALID' });
  assert.throws(() => marSignatureSlots(Array(9).fill(k), 'sha384'), { code: 'MAR_KEYS_INVALID' });
  assert.throws(() => marSignatureSlots([k], 'md5' as 'sha1'), { code: 'MAR_ALGORITHM_UNSUPPORTED' });
});

test('a failed signing leaves no output file', { skip: SHARED_SKIP }, async () => {
  const out = join(dir, 'never.mar');
  await assert.rejects(
    signMarFile(libmar('manipulated_backend_collision.mar'), out, {
      keys: [key('mycert')],
      algorithm: 'sha384',
    }),
    { name: 'FormatError' },
  );
  assert.throws(() => readFileSync(out), { code: 'ENOENT' });
});
