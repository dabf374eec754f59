import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { compress, decompressEntry, recompressEntry } from '../../src/codecs/index.js';
import { inflateRaw } from '../../src/codecs/deflate.js';
import type { CodecSettings } from '../../src/codecs/types.js';

/** 3 MiB: half random, half repetitive (several bzip2 blocks, several xz encode chunks). */
const DATA = Buffer.concat([randomBytes(1536 * 1024), Buffer.alloc(1536 * 1024, 'marsign progress ')]);

function recorder(): { calls: [number, number][]; cb: (d: number, t: number) => void } {
  const calls: [number, number][] = [];
  return { calls, cb: (d, t) => calls.push([d, t]) };
}

/** Forward only, never past the total, ending at it, with at least one report before the end. */
function checkSeries(calls: [number, number][], total: number, what: string): void {
  assert.ok(calls.length >= 2, `${what}: ${JSON.stringify(calls)}`);
  for (const [i, [d, t]] of calls.entries()) {
    assert.equal(t, total, what);
    assert.ok(d >= 0 && d <= t, what);
    if (i > 0) assert.ok(d >= calls[i - 1]![0], `${what}: forward only`);
  }
  assert.ok(calls[0]![0] < total, `${what}: a report before the end`);
  assert.equal(calls.at(-1)![0], total, `${what}: ends at the total`);
}

for (const settings of [
  { codec: 'xz', dictSize: 8 * 1024 * 1024, x86: true, check: 'crc64' },
  { codec: 'bz2', level: 1 },
] as CodecSettings[]) {
  test(`${settings.codec}: decode reports stored bytes consumed, encode uncompressed bytes taken in`, async () => {
    const enc = recorder();
    const stored = await compress(DATA, settings, enc.cb);
    // xz streams 1 MiB pieces; one-shot bzip2 reports once, when done.
    if (settings.codec === 'xz') checkSeries(enc.calls, DATA.length, 'xz encode');
    else assert.deepEqual(enc.calls, [[DATA.length, DATA.length]]);
    const dec = recorder();
    const decoded = await decompressEntry(stored, { onProgress: dec.cb, checkPrefix: () => undefined });
    assert.ok(Buffer.from(decoded.data).equals(DATA));
    checkSeries(dec.calls, stored.length, `${settings.codec} decode`);
    // Re-encoding (bzip2: block reuse) reports too, ending at the whole input.
    const changed = Buffer.from(DATA);
    changed[10] = changed[10]! ^ 1;
    const re = recorder();
    await recompressEntry(changed, decoded, re.cb);
    assert.equal(re.calls.at(-1)![0], DATA.length);
  });
}

test('deflate: inflate reports compressed bytes consumed', async () => {
  const stored = await compress(DATA, { codec: 'deflate', level: 6 });
  const r = recorder();
  const out = await inflateRaw(stored, { onProgress: r.cb });
  assert.ok(Buffer.from(out).equals(DATA));
  assert.ok(r.calls.length >= 2);
  assert.ok(r.calls.some(([d]) => d > 0 && d <= stored.length));
});
