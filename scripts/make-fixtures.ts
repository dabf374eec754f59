/**
 * Regenerates the sample release in fixtures/release/ deterministically:
 *   node --import tsx scripts/make-fixtures.ts            # MARs, target.zip (and keys only if missing)
 *   node --import tsx scripts/make-fixtures.ts --new-keys # also replace the TEST-ONLY keys
 *   node --import tsx scripts/make-fixtures.ts --zip-only # only fixtures/release/target.zip
 *
 * Every PE is written by our own buildPe (no third-party binaries); entries are compressed with our
 * codecs (bzip2 -9; xz with the x86 BCJ filter, 8 MiB dictionary, CRC64 like Mozilla's packaging),
 * and the MARs carry a product-information block. Same inputs → same bytes: no timestamps and no
 * randomness outside the keys (RSA key generation is random, so keys are kept unless asked).
 */
import { existsSync } from 'node:fs';
import { mkdir, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compress } from '../src/codecs/index.js';
import type { CodecSettings } from '../src/codecs/types.js';
import { buildPe } from '../src/formats/pe/synth.js';
import { generateDevKeys } from '../src/keys/dev.js';
import { MarWriter } from '../src/mar/writer.js';
import { createZip, type CreateZipFile } from '../src/zip/file.js';
import { PROJECT_ROOT } from '../src/version.js';

export const RELEASE_DIR = join(PROJECT_ROOT, 'fixtures', 'release');
export const PRODUCT_INFO = { channel: 'marsign-test', version: '140.0' };

const BZ2: CodecSettings = { codec: 'bz2', level: 9 };
const XZ_BCJ: CodecSettings = { codec: 'xz', dictSize: 8 * 1024 * 1024, x86: true, check: 'crc64' };

/** The sample locales and each one's MAR codec (Firefox uses one codec per MAR). */
export const LOCALES: { locale: string; codec: CodecSettings }[] = [
  { locale: 'en-US', codec: BZ2 },
  { locale: 'de', codec: XZ_BCJ },
  { locale: 'fr', codec: XZ_BCJ },
  { locale: 'ja', codec: BZ2 },
];

/** Deterministic, compressible filler: words from a fixed list picked by a 32-bit LCG. */
function filler(seed: number, size: number): Uint8Array {
  const words = [
    'mozilla',
    'update',
    'locale',
    'sign',
    'archive',
    'binary',
    'release',
    'entry',
    'marsign',
    'x86',
  ];
  const out = new Uint8Array(size);
  let s = seed >>> 0;
  let i = 0;
  while (i < size) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const w = words[s % words.length]! + ((s >>> 8) % 7 === 0 ? '\n' : ' ');
    for (let j = 0; j < w.length && i < size; j++) out[i++] = w.charCodeAt(j);
    // Some incompressible bytes too, as real code has.
    if ((s >>> 16) % 11 === 0 && i < size) out[i++] = (s >>> 24) & 0xff;
  }
  return out;
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** One locale's files, in MAR order: shared binaries are identical across locales; one PE differs. */
export function localeFiles(locale: string): { name: string; flags: number; data: Uint8Array }[] {
  return [
    {
      name: 'update.manifest',
      flags: 0o644,
      data: text(`type "complete"\nadd "firefox.exe"\nadd "xul.dll"\n`),
    },
    {
      name: 'firefox.exe',
      flags: 0o755,
      data: buildPe({ arch: 'x64', kind: 'exe', name: 'firefox', payload: filler(1, 24_000) }),
    },
    {
      name: 'xul.dll',
      flags: 0o644,
      data: buildPe({ arch: 'x64', kind: 'dll', name: 'xul', payload: filler(2, 160_000) }),
    },
    {
      name: 'updater.exe',
      flags: 0o755,
      data: buildPe({ arch: 'x86', kind: 'exe', name: 'updater', payload: filler(3, 12_000) }),
    },
    { name: 'omni.ja', flags: 0o644, data: filler(4, 40_000) },
    {
      name: 'uninstall/helper.exe',
      flags: 0o755,
      data: buildPe({
        arch: 'x86',
        kind: 'exe',
        name: `helper ${locale}`,
        payload: text(`locale=${locale}\n`),
      }),
    },
    {
      name: 'defaults/pref/channel-prefs.js',
      flags: 0o644,
      data: text(`pref("app.update.channel", "marsign-test");\n`),
    },
    { name: `locale.ini`, flags: 0o644, data: text(`[Locale]\nlocale=${locale}\n`) },
  ];
}

export async function writeLocaleMar(path: string, locale: string, codec: CodecSettings): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const w = await MarWriter.create(path, { productInfo: PRODUCT_INFO });
  try {
    for (const f of localeFiles(locale)) await w.addEntry(f.name, f.flags, await compress(f.data, codec));
    await w.finish();
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** Fixed timestamp of every target.zip entry (the DOS time of 2025-01-01 12:00:00). */
const ZIP_MTIME = new Date(Date.UTC(2025, 0, 1, 12, 0, 0));

/**
 * A Windows build zip like Mozilla's `target.zip`: a `firefox/` folder holding the en-US locale's files
 * (the same PE bytes as inside fixtures/release/en-US/complete.mar), deflate and stored entries (one
 * stored PE), two entries with data descriptors, directory entries, Unix modes.
 */
export function targetZipFiles(): CreateZipFile[] {
  const f = new Map(localeFiles('en-US').map((x) => [x.name, x]));
  const file = (name: string, extra: Partial<CreateZipFile> = {}): CreateZipFile => {
    const x = f.get(name)!;
    return { name: `firefox/${name}`, data: x.data, mode: x.flags, mtime: ZIP_MTIME, ...extra };
  };
  const dir = (name: string): CreateZipFile => ({ name: `firefox/${name}`, mtime: ZIP_MTIME });
  return [
    { name: 'firefox/', mtime: ZIP_MTIME },
    file('firefox.exe'),
    file('xul.dll'),
    file('updater.exe', { descriptor: true }),
    file('omni.ja', { method: 0 }),
    file('update.manifest'),
    file('locale.ini', { descriptor: true }),
    dir('defaults/'),
    dir('defaults/pref/'),
    file('defaults/pref/channel-prefs.js'),
    dir('uninstall/'),
    file('uninstall/helper.exe', { method: 0 }),
  ];
}

export async function writeTargetZip(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await createZip(path, targetZipFiles());
}

const CONFIG = {
  profiles: {
    dev: {
      authenticode: {
        certChain: 'keys/codesign.chain.pem',
        key: 'keys/codesign.key.pem',
        digest: 'sha256',
        programName: 'marsign TEST-ONLY',
        programUrl: 'https://example.invalid/marsign-test-only',
      },
      mar: { keys: ['keys/mar.key.pem'], algorithm: 'sha384' },
    },
  },
};

async function main(): Promise<void> {
  const zipPath = join(RELEASE_DIR, 'target.zip');
  if (process.argv.includes('--zip-only')) {
    await writeTargetZip(zipPath);
    process.stdout.write(`wrote ${zipPath}\n`);
    return;
  }
  const newKeys = process.argv.includes('--new-keys');
  const keysDir = join(RELEASE_DIR, 'keys');
  if (newKeys || !existsSync(join(keysDir, 'codesign.key.pem'))) {
    await rm(keysDir, { recursive: true, force: true });
    await generateDevKeys(keysDir, { force: true });
    // The release has one config (below); the keys dir's own copy would only confuse.
    await unlink(join(keysDir, 'marsign.config.json')).catch(() => undefined);
  }
  await writeFile(join(RELEASE_DIR, 'marsign.config.json'), JSON.stringify(CONFIG, null, 2) + '\n');
  const release = { release: 'sample-140.0', profile: 'dev', locales: {} as Record<string, string> };
  for (const { locale, codec } of LOCALES) {
    const rel = `${locale}/complete.mar`;
    await writeLocaleMar(join(RELEASE_DIR, rel), locale, codec);
    release.locales[locale] = rel;
  }
  // The Windows build zip is part of the release: its PEs are the en-US MAR's, signed once for both.
  release.locales['win64'] = 'target.zip';
  await writeFile(join(RELEASE_DIR, 'release.json'), JSON.stringify(release, null, 2) + '\n');
  await writeTargetZip(zipPath);
  process.stdout.write(`wrote ${LOCALES.length} locale MARs and target.zip to ${RELEASE_DIR}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) await main();
