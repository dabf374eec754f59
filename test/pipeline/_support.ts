/**
 * Shared checks for pipeline/CLI tests: verify a signed output MAR against its input with our reader
 * and with independent tools (openssl over the signable stream, xz/bzip2 CLIs, osslsigncode).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FsCacheStore } from '../../cache/fs-store.js';
import { compress, detectCodec, readSettings, settingsKey } from '../../src/codecs/index.js';
import type { CodecSettings } from '../../src/codecs/types.js';
import { readEntryBytes, readMar, signableChunks, type MarInfo } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { MarWriter } from '../../src/mar/writer.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { PROJECT_ROOT } from '../helpers/env.js';

export const RELEASE = join(PROJECT_ROOT, 'fixtures', 'release');
export const CONFIG_PATH = join(RELEASE, 'marsign.config.json');
export const KEYS = join(RELEASE, 'keys');
export const LOCALES = ['en-US', 'de', 'fr', 'ja'] as const;
export const fixtureMar = (locale: string): string => join(RELEASE, locale, 'complete.mar');
/** The sample release's Windows build zip (`win64` in release.json): the en-US MAR's PEs, in deflate/stored entries. */
export const TARGET_ZIP = join(RELEASE, 'target.zip');
export const ZIP_SIGNED = [
  'firefox/firefox.exe',
  'firefox/xul.dll',
  'firefox/updater.exe',
  'firefox/uninstall/helper.exe',
];
/** Every container of the sample release (release.json): the four locale MARs and the zip. */
export const RELEASE_CONTAINERS = [...LOCALES, 'win64'] as const;
/** Where `sign-release` puts a container of the sample release under `out`. */
export const releaseOutput = (out: string, name: string): string =>
  name === 'win64' ? join(out, 'win64', 'target.zip') : join(out, name, 'complete.mar');

export function newCache(root: string, secret: Uint8Array = randomBytes(32)): FsCacheStore {
  return new FsCacheStore({ root, hmacSecret: secret });
}

export interface MarContents {
  info: MarInfo;
  raw: Map<string, Buffer>;
}

export async function readAll(path: string): Promise<MarContents> {
  const src = await FileSource.open(path);
  try {
    const info = await readMar(src);
    const raw = new Map<string, Buffer>();
    for (const e of info.entries) raw.set(e.name, Buffer.from(await readEntryBytes(src, e)));
    return { info, raw };
  } finally {
    await src.close();
  }
}

/** Decompress with the real CLI (an implementation independent of ours). */
export function cliDecompress(bytes: Uint8Array): Buffer {
  const codec = detectCodec(bytes);
  if (codec === 'none') return Buffer.from(bytes);
  const r = spawnSync(codec === 'xz' ? 'xz' : 'bzip2', ['-dc'], { input: bytes, maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, `${codec} -dc failed: ${r.stderr}`);
  return r.stdout;
}

export function osslsigncodeVerify(pe: Uint8Array, dir: string, name: string): void {
  const file = join(dir, name.replace(/[^A-Za-z0-9._-]/g, '_'));
  writeFileSync(file, pe);
  const r = spawnSync('osslsigncode', ['verify', '-CAfile', join(KEYS, 'ca.cert.pem'), '-in', file], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `osslsigncode verify ${name}: ${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /Signature verification: ok/, name);
}

/** openssl dgst -sha384 -verify over the signable stream (mar-format.md §8) for signature 0. */
export async function opensslVerifyMar(path: string, dir: string): Promise<void> {
  const src = await FileSource.open(path);
  try {
    const info = await readMar(src);
    assert.equal(info.signatures.length, 1);
    const sig = info.signatures[0]!;
    assert.equal(sig.algorithmId, 2);
    const chunks: Uint8Array[] = [];
    for await (const c of signableChunks(src, info)) chunks.push(c);
    const streamFile = join(dir, 'signable.bin');
    const sigFile = join(dir, 'sig.bin');
    writeFileSync(streamFile, Buffer.concat(chunks));
    writeFileSync(sigFile, await src.read(sig.offset, sig.length));
    const r = spawnSync(
      'openssl',
      ['dgst', '-sha384', '-verify', join(KEYS, 'mar.pub.pem'), '-signature', sigFile, streamFile],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, `openssl: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /Verified OK/);
  } finally {
    await src.close();
  }
}

export interface CheckOptions {
  /** Entry names expected to be signed (all others must be byte-identical passthrough). */
  signed: string[];
  /** Scratch dir for tool inputs. */
  dir: string;
  /** Skip osslsigncode (for speed on large corpora: a sample is checked instead). */
  osslsigncodeLimit?: number;
}

/**
 * The whole output contract: MAR signature (ours + openssl), order/names/flags/product info, every
 * signed entry decompresses (CLI) to a PE that osslsigncode verifies against the dev CA with the same
 * codec settings as its input, every other entry is byte-identical.
 */
export async function checkSignedOutput(input: string, output: string, o: CheckOptions): Promise<void> {
  const v = await verifyMar(output, [join(KEYS, 'mar.cert.pem')]);
  assert.ok(v.valid, `verifyMar: ${v.problems.join('; ')}`);
  await opensslVerifyMar(output, o.dir);
  const a = await readAll(input);
  const b = await readAll(output);
  assert.deepEqual(
    b.info.entries.map((e) => [e.name, e.flags]),
    a.info.entries.map((e) => [e.name, e.flags]),
    'names, order and flags',
  );
  assert.equal(b.info.productInfo?.channel, a.info.productInfo?.channel);
  assert.equal(b.info.productInfo?.version, a.info.productInfo?.version);
  let checked = 0;
  for (const e of a.info.entries) {
    const inRaw = a.raw.get(e.name)!;
    const outRaw = b.raw.get(e.name)!;
    if (!o.signed.includes(e.name)) {
      assert.ok(inRaw.equals(outRaw), `${e.name} passthrough must be byte-identical`);
      continue;
    }
    assert.ok(!inRaw.equals(outRaw), `${e.name} must have changed`);
    assert.equal(
      settingsKey(readSettings(outRaw)),
      settingsKey(readSettings(inRaw)),
      `${e.name} codec settings`,
    );
    const pe = cliDecompress(outRaw);
    const orig = cliDecompress(inRaw);
    assert.ok(pe.length > orig.length, `${e.name} grew by a signature`);
    if (o.osslsigncodeLimit === undefined || checked < o.osslsigncodeLimit)
      osslsigncodeVerify(pe, o.dir, e.name);
    checked++;
  }
}

/** Build a test MAR (unsigned, with PIB) from in-memory files. */
export async function buildMar(
  path: string,
  files: { name: string; data: Uint8Array; flags?: number; codec: CodecSettings }[],
): Promise<void> {
  const w = await MarWriter.create(path, { productInfo: { channel: 'test-channel', version: '1.0' } });
  try {
    for (const f of files) await w.addEntry(f.name, f.flags ?? 0o644, await compress(f.data, f.codec));
    await w.finish();
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

export const BZ2: CodecSettings = { codec: 'bz2', level: 9 };
export const XZ_BCJ: CodecSettings = { codec: 'xz', dictSize: 8 * 1024 * 1024, x86: true, check: 'crc64' };

/** Names the default policy signs in the fixture MARs. */
export const FIXTURE_SIGNED = ['firefox.exe', 'xul.dll', 'updater.exe', 'uninstall/helper.exe'];
