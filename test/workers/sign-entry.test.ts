import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { crc32 } from 'node:zlib';
import { Piscina } from 'piscina';
import { compress, decompress, readSettings, settingsKey } from '../../src/codecs/index.js';
import { loadConfig } from '../../src/config/index.js';
import type { LoadedConfig } from '../../src/config/types.js';
import { PolicyError } from '../../src/errors.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { SigningPool, SIGN_ENTRY_WORKER } from '../../src/pipeline/pool.js';
import type { SignEntryResult, SignEntryTask } from '../../src/pipeline/protocol.js';
import { verifyPe } from '../../src/signing/verify-pe.js';
import signEntry from '../../workers/sign-entry.js';
import { bz2WithZeros, run, xzZeros } from '../codecs/helpers.js';
import { tempDir } from '../helpers/env.js';
import { BZ2, CONFIG_PATH, RELEASE, XZ_BCJ } from '../pipeline/_support.js';

interface DevProfile {
  authenticode: { certChain: string; key: string };
  mar: { keys: string[] };
}

const codeIs =
  (code: string) =>
  (e: Error & { code?: string }): boolean => {
    assert.equal(e.code, code, e.message);
    return true;
  };

let config: LoadedConfig;
let pool: SigningPool;
before(async () => {
  config = await loadConfig(CONFIG_PATH);
  pool = new SigningPool({ threads: 2 });
});
after(() => pool.close());

/** A task as the pipeline makes one for a MAR entry: the codec sniffed from the stored bytes. */
const task = (input: Uint8Array, name = 'x.exe', profile = 'dev'): SignEntryTask => ({
  configPath: config.path,
  configSha256: config.sha256,
  profile,
  name,
  input,
  codec: readSettings(input),
  maxOutputSize: 64 * 1024 * 1024,
});

/** Our own allocation, as FileSource does: a buffer that owns its ArrayBuffer. */
function owned(b: Uint8Array): Buffer {
  const out = Buffer.allocUnsafeSlow(b.length);
  out.set(b);
  return out;
}

test('from sources the pool loads the tsx bootstrap, which re-exports the task function', async () => {
  assert.match(SIGN_ENTRY_WORKER, /workers\/tsx-bootstrap\.mjs$/);
  const boot = (await import(SIGN_ENTRY_WORKER)) as { default: unknown };
  assert.equal(boot.default, signEntry);
});

for (const [label, codec] of [
  ['bz2', BZ2],
  ['xz+BCJ', XZ_BCJ],
] as const) {
  test(`signs a ${label} PE entry in a worker thread: input transferred, output signed with the same settings`, async () => {
    const pe = buildPe({ arch: 'x64', kind: 'dll', name: label });
    const input = owned(await compress(pe, codec));
    const inputKey = settingsKey(readSettings(input));
    const r = await pool.run(task(input, 'a.dll'));
    assert.equal(input.byteLength, 0, 'the input buffer was transferred (detached), not copied');
    assert.equal(r.codecSettings, inputKey);
    assert.equal(settingsKey(readSettings(r.output)), inputKey);
    assert.equal(r.output.byteLength, r.output.buffer.byteLength, 'output arrived in its own buffer');
    const signed = await decompress(r.output);
    assert.equal(signed.length, r.decoded.size);
    assert.equal(r.decoded.crc32, crc32(signed), 'the CRC-32 of the signed PE, as zip records it');
    assert.equal(r.decodedSize, pe.length);
    assert.equal(r.madeSignature, true, 'no claim port: the task signs itself');
    const v = await verifyPe(signed, {});
    assert.ok(v.signed && v.digestMatches && v.signatureValid, v.problems.join('; '));
  });
}

test('errors cross the thread boundary with name and code', async () => {
  const notPe = owned(await compress(new TextEncoder().encode('hello, not a PE'), BZ2));
  await assert.rejects(
    pool.run(task(notPe, 'readme.dll')),
    (e: Error & { code?: string }) =>
      e instanceof PolicyError && e.code === 'POLICY_NOT_PE' && /readme\.dll/.test(e.message),
  );
  const corrupt = owned(await compress(buildPe({ arch: 'x86' }), XZ_BCJ));
  corrupt[corrupt.length >> 1]! ^= 0xff;
  await assert.rejects(pool.run(task(corrupt)), (e: Error & { format?: string }) => e.name === 'FormatError');
  await assert.rejects(
    pool.run(task(owned(buildPe({ arch: 'x86' })), 'x.exe', 'no-such-profile')),
    (e: Error & { code?: string }) => e.name === 'ConfigError',
  );
});

test('the task function returns piscina movable data (result + transfer list), never throws', async () => {
  const ok = (await signEntry(task(owned(buildPe({ arch: 'x86' }))))) as Record<symbol, unknown>;
  const value = ok[Piscina.valueSymbol] as SignEntryResult;
  const transfer = ok[Piscina.transferableSymbol] as ArrayBuffer[];
  assert.equal(value.ok, true);
  assert.ok(value.ok && transfer[0] === value.output.buffer);
  const bad = (await signEntry(task(owned(new Uint8Array(10)), 'z.exe'))) as SignEntryResult;
  assert.equal(bad.ok, false);
  assert.ok(!bad.ok && bad.error.name === 'PolicyError' && bad.error.code === 'POLICY_NOT_PE');
  assert.equal(typeof (bad as { error: object }).error, 'object');
  assert.ok(!((bad as { error: object }).error instanceof Error), 'plain data, not an Error instance');
});

test('codec bombs in signing (issue 10 item 5): typed errors, nothing signed', async () => {
  const zeros = owned(bz2WithZeros(1.06 * 2 ** 30));
  await assert.rejects(pool.run(task(zeros, 'setup.exe')), codeIs('CODEC_RATIO_TOO_HIGH'));
  const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'bomb' });
  const peThenZeros = owned(bz2WithZeros(2 ** 30, run('bzip2', ['-9', '-c'], pe)));
  await assert.rejects(pool.run(task(peThenZeros, 'setup.exe')), codeIs('CODEC_RATIO_TOO_HIGH'));
  await assert.rejects(pool.run(task(owned(xzZeros(64 << 20)), 'setup.exe')), codeIs('CODEC_RATIO_TOO_HIGH'));
});

test("the config's limits reach the worker: maxCompressionRatio and maxEntrySize", async () => {
  const dir = tempDir('marsign-limits-');
  const withLimits = async (limits: object): Promise<LoadedConfig> => {
    const file = JSON.parse(await readFile(CONFIG_PATH, 'utf8')) as { profiles: { dev: DevProfile } };
    const dev = file.profiles.dev;
    dev.authenticode.certChain = join(RELEASE, dev.authenticode.certChain);
    dev.authenticode.key = join(RELEASE, dev.authenticode.key);
    dev.mar.keys = dev.mar.keys.map((k) => join(RELEASE, k));
    const path = join(dir, `limits-${Object.values(limits).join('-')}.json`);
    await writeFile(path, JSON.stringify({ ...file, limits }));
    return loadConfig(path);
  };
  // A PE + 24 MiB of zeros: over the default 1000:1 ratio, signed with a ratio cap of 10^6.
  const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'limits' });
  const input = (): Buffer => owned(bz2WithZeros(24 << 20, run('bzip2', ['-9', '-c'], pe)));
  await assert.rejects(pool.run(task(input())), codeIs('CODEC_RATIO_TOO_HIGH'));
  const loose = await withLimits({ maxCompressionRatio: 1_000_000 });
  const r = await pool.run({ ...task(input()), configPath: loose.path, configSha256: loose.sha256 });
  assert.equal(r.decodedSize, pe.length + (24 << 20));
  const small = await withLimits({ maxCompressionRatio: 1_000_000, maxEntrySize: 1 << 20 });
  await assert.rejects(
    pool.run({ ...task(input()), configPath: small.path, configSha256: small.sha256 }),
    codeIs('CODEC_OUTPUT_TOO_LARGE'),
  );
});
