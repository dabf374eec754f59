/**
 * The real PE corpus: ~100 third-party Windows PE files (PE32 and PE32+; exe, dll, sys, ocx, efi; 6 KiB to
 * 27 MiB; a few already Authenticode-signed by Debian or Microsoft) taken from Debian packages with
 * `apt-get download` and `dpkg-deb -x`. Nothing is installed and no root is needed, but apt's package lists
 * must exist (`apt-get update` once). Built by `scripts/pe-corpus.ts` into `.cache/pe-corpus` (gitignored;
 * third-party binaries are never committed) or `$MARSIGN_CORPUS_DIR`; tests get it from `peCorpus()` in
 * env.ts. Layout: `<dir>/<group>/<file>` plus `MANIFEST.json` (source package, version and path of each file).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROJECT_ROOT } from '../../src/version.js';

/** Debian (bookworm, amd64) packages the corpus comes from: about 130 MB of downloads. */
export const CORPUS_PACKAGES = [
  'libwine', // ~690 PE32+ wine builtins (x86_64-windows)
  'gcc-mingw-w64-x86-64-win32-runtime', // mingw runtime DLLs, PE32+, up to 23 MB
  'gcc-mingw-w64-i686-win32-runtime', // the same as PE32
  'libz-mingw-w64', // zlib1.dll for both
  'nsis-common', // NSIS installer stubs and plugins (PE32 and PE32+)
  'win32-loader', // an NSIS installer: a PE32 exe with an appended payload
  'shim-unsigned', // EFI applications (subsystem 10)
  'ipxe', // EFI applications built by a non-GNU-ld toolchain
  'shim-signed', // shimx64.efi signed by Microsoft (a two-entry certificate table)
  'shim-helpers-amd64-signed', // mmx64/fbx64.efi signed by Debian: twins of shim-unsigned's
  'grub-efi-amd64-signed', // grubx64.efi signed by Debian
  'fwupd-amd64-signed', // fwupdx64.efi signed by Debian
] as const;

export const MANIFEST = 'MANIFEST.json';

/** What the script reports and tests skip with when the corpus cannot be built here (not a bug). */
export class CorpusUnavailableError extends Error {}

export interface PeHeader {
  pe32plus: boolean;
  dll: boolean;
  subsystem: number;
  /** The certificate-table directory entry is non-empty. */
  signed: boolean;
}

export interface CorpusFile extends PeHeader {
  /** `<group>/<file>` inside the corpus folder. */
  path: string;
  size: number;
  sha256: string;
  /** `<package>=<version>:<path in the package>`. */
  source: string;
}

export interface CorpusManifest {
  /** sha256 of this file: a changed recipe rebuilds the corpus. */
  recipe: string;
  packages: Record<string, string>;
  files: CorpusFile[];
}

/** The corpus folder: $MARSIGN_CORPUS_DIR or .cache/pe-corpus in the checkout. */
export function corpusDir(): string {
  return resolve(process.env.MARSIGN_CORPUS_DIR ?? join(PROJECT_ROOT, '.cache', 'pe-corpus'));
}

let recipeCache: string | undefined;
export function recipeId(): string {
  recipeCache ??= createHash('sha256')
    .update(readFileSync(fileURLToPath(import.meta.url)))
    .digest('hex');
  return recipeCache;
}

/**
 * The corpus files (absolute paths, sorted) when `dir` holds a complete corpus of the current recipe
 * (every listed file present with its size), else undefined.
 */
export function readCorpus(dir = corpusDir()): string[] | undefined {
  let m: CorpusManifest;
  try {
    m = JSON.parse(readFileSync(join(dir, MANIFEST), 'utf8')) as CorpusManifest;
  } catch {
    return undefined;
  }
  if (m.recipe !== recipeId() || !Array.isArray(m.files) || m.files.length === 0) return undefined;
  const out: string[] = [];
  for (const f of m.files) {
    const p = join(dir, f.path);
    try {
      if (statSync(p).size !== f.size) return undefined;
    } catch {
      return undefined;
    }
    out.push(p);
  }
  return out.sort();
}

/** MZ, e_lfanew → `PE\0\0`, COFF characteristics, optional-header magic, subsystem, certificate directory. */
export function peHeader(path: string): PeHeader | undefined {
  const fd = openSync(path, 'r');
  try {
    const size = statSync(path).size;
    const dos = Buffer.alloc(64);
    if (size < 512 || readSync(fd, dos, 0, 64, 0) !== 64 || dos.toString('latin1', 0, 2) !== 'MZ')
      return undefined;
    const at = dos.readUInt32LE(0x3c);
    if (at < 64 || at + 24 + 240 > size) return undefined;
    const h = Buffer.alloc(24 + 240);
    readSync(fd, h, 0, h.length, at);
    if (h.readUInt32BE(0) !== 0x50450000) return undefined; // "PE\0\0"
    const characteristics = h.readUInt16LE(22);
    const magic = h.readUInt16LE(24);
    if (magic !== 0x10b && magic !== 0x20b) return undefined;
    const pe32plus = magic === 0x20b;
    const opt = 24;
    const dirCount = h.readUInt32LE(opt + (pe32plus ? 108 : 92));
    const certDir = opt + (pe32plus ? 112 : 96) + 4 * 8;
    return {
      pe32plus,
      dll: (characteristics & 0x2000) !== 0,
      subsystem: h.readUInt16LE(opt + 68),
      signed: dirCount > 4 && h.readUInt32LE(certDir + 4) > 0,
    };
  } finally {
    closeSync(fd);
  }
}

/** A PE file found in an unpacked package. */
export interface Candidate {
  pkg: string;
  /** Path inside the package. */
  rel: string;
  abs: string;
  size: number;
  pe: PeHeader;
}

export interface Pick {
  from: Candidate;
  /** `<group>/<file>` in the corpus. */
  path: string;
}

/** `n` items at evenly spaced ranks of `sorted`, first and last included. */
function spread<T>(sorted: T[], n: number): T[] {
  if (sorted.length <= n) return [...sorted];
  const idx = new Set(Array.from({ length: n }, (_, i) => Math.round((i * (sorted.length - 1)) / (n - 1))));
  return [...idx].map((i) => sorted[i]!);
}

const bySize = (a: Candidate, b: Candidate): number => a.size - b.size || (a.rel < b.rel ? -1 : 1);
const ext = (p: string): string => /\.([^./]+)$/.exec(p)?.[1]?.toLowerCase() ?? '';

/**
 * The selection, deterministic for given package contents: wine at 36 evenly spaced sizes plus the
 * median-size file of each rarer extension (sys, drv, ocx, cpl, ...) and kernelbase.dll; every mingw runtime DLL of both
 * architectures; zlib for both; NSIS stubs (one per compressor and architecture), four plugins for x86 and
 * amd64, a UI, RegTool and the win32-loader installer; the EFI applications; and the Debian/Microsoft-
 * signed EFI binaries under `efi-signed/` with the name of their unsigned twin in `efi/` where one exists.
 */
export function selectCorpus(all: Candidate[]): Pick[] {
  const picks: Pick[] = [];
  const put = (from: Candidate, path: string): void => {
    if (!picks.some((p) => p.path === path)) picks.push({ from, path });
  };
  const of = (pkg: string, re: RegExp): Candidate[] =>
    all.filter((c) => c.pkg === pkg && re.test(c.rel)).sort(bySize);

  const wine = of('libwine', /\/x86_64-windows\/[^/]+$/).filter((c) => c.size >= 1024);
  for (const c of spread(wine, 36)) put(c, `wine64/${basename(c.rel)}`);
  // bench/codecs.ts's representative PE32+ (6.6 MB).
  for (const c of wine.filter((w) => basename(w.rel) === 'kernelbase.dll')) put(c, 'wine64/kernelbase.dll');
  const exts = [...new Set(wine.map((c) => ext(c.rel)))].filter((e) => e !== 'dll' && e !== 'exe').sort();
  for (const e of exts) {
    const same = wine.filter((c) => ext(c.rel) === e);
    const c = same[same.length >> 1]!;
    put(c, `wine64/${basename(c.rel)}`);
  }
  for (const [pkg, group] of [
    ['gcc-mingw-w64-x86-64-win32-runtime', 'mingw-x86_64'],
    ['gcc-mingw-w64-i686-win32-runtime', 'mingw-i686'],
  ] as const) {
    for (const c of of(pkg, /\.dll$/)) put(c, `${group}/${basename(c.rel)}`);
  }
  for (const c of of('libz-mingw-w64', /\/zlib1\.dll$/)) {
    put(c, `zlib-mingw/zlib1-${c.rel.includes('x86_64') ? 'x86_64' : 'i686'}.dll`);
  }
  for (const c of of('nsis-common', /\/Stubs\/[a-z0-9]+-[a-z0-9]+-[a-z]+$/)) {
    put(c, `nsis/stub-${basename(c.rel)}.exe`); // bzip2-x86-ansi, lzma-amd64-unicode, ... (not *_solid)
  }
  for (const c of of(
    'nsis-common',
    /\/Plugins\/(x86-unicode|amd64-unicode)\/(System|nsDialogs|Math|InstallOptions)\.dll$/,
  )) {
    put(c, `nsis/${basename(dirname(c.rel))}-${basename(c.rel)}`);
  }
  for (const c of of('nsis-common', /\/(UIs\/modern\.exe|Bin\/RegTool-(x86|amd64)\.bin)$/)) {
    put(c, `nsis/${basename(c.rel).replace(/\.bin$/, '.exe')}`);
  }
  for (const c of of('win32-loader', /\.exe$/)) put(c, `nsis/${basename(c.rel)}`);
  for (const pkg of ['shim-unsigned', 'ipxe']) {
    for (const c of of(pkg, /\.efi$/)) put(c, `efi/${basename(c.rel)}`);
  }
  for (const pkg of ['shim-signed', 'shim-helpers-amd64-signed', 'fwupd-amd64-signed']) {
    for (const c of of(pkg, /\.efi\.signed$/)) put(c, `efi-signed/${basename(c.rel, '.signed')}`);
  }
  for (const c of of('grub-efi-amd64-signed', /\/grubx64\.efi\.signed$/)) put(c, 'efi-signed/grubx64.efi');
  return picks;
}

function run(cmd: string, args: string[], cwd?: string): { status: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new CorpusUnavailableError(`${cmd} not found (the corpus needs Debian's apt-get and dpkg-deb)`);
    throw r.error;
  }
  return { status: r.status, out: r.stdout, err: r.stderr };
}

/** Why `apt-get download` failed, in one line a user can act on. */
function aptFailure(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => /^E:/.test(l));
  const first = lines[0] ?? stderr.trim().split('\n').pop() ?? 'no output';
  if (/Unable to locate package|has no installation candidate/.test(stderr))
    return `apt has no package lists for ${CORPUS_PACKAGES.join(' ')} (run \`apt-get update\` as root once): ${first}`;
  if (/Failed to fetch|Could not resolve|Temporary failure|Connection failed|Unable to connect/.test(stderr))
    return `apt-get download failed, no network to the Debian mirror? ${first}`;
  return `apt-get download failed: ${first}`;
}

function walkFiles(dir: string, out: string[] = []): string[] {
  for (const n of readdirSync(dir).sort()) {
    const p = join(dir, n);
    const s = lstatSync(p);
    if (s.isDirectory()) walkFiles(p, out);
    else if (s.isFile()) out.push(p);
  }
  return out;
}

const sleep = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Holds `<dir>.lock` (a pid file) while `fn` runs, so test files starting at the same time build the corpus
 * once: the others wait for the lock and then find the corpus built. A lock whose process is gone is taken over.
 */
function withLock<T>(dir: string, fn: () => T): T {
  const lock = `${dir}.lock`;
  const deadline = Date.now() + 20 * 60_000;
  mkdirSync(dirname(dir), { recursive: true });
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let owner: number;
    let age: number;
    try {
      owner = Number(readFileSync(lock, 'utf8'));
      age = Date.now() - statSync(lock).mtimeMs;
    } catch {
      continue; // released meanwhile
    }
    // An empty lock is being written by its owner; a lock whose process is gone is taken over.
    const stale = Number.isInteger(owner) && owner > 0 ? !pidAlive(owner) : age > 10_000;
    if (stale) rmSync(lock, { force: true });
    else if (Date.now() > deadline) throw new Error(`${lock}: still held by pid ${owner} after 20 minutes`);
    else sleep(1000);
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/**
 * Builds the corpus into `dir` unless it already holds the current one (another process may have built it
 * while this one waited for the lock). Throws CorpusUnavailableError when apt or the network is missing.
 */
export function buildCorpus(dir = corpusDir(), log: (s: string) => void = () => {}): string[] {
  const existing = readCorpus(dir);
  if (existing) return existing;
  const arch = run('dpkg', ['--print-architecture']).out.trim();
  if (arch !== 'amd64')
    throw new CorpusUnavailableError(`needs an amd64 Debian, this is ${arch || 'unknown'}`);
  run('dpkg-deb', ['--version']);
  return withLock(dir, () => {
    const again = readCorpus(dir);
    if (again) return again;
    // Left behind by a build that was killed (we hold the lock, so none is running for this folder).
    for (const n of readdirSync(dirname(dir))) {
      const p = join(dirname(dir), n);
      if (n.startsWith('.pe-corpus-build-') && Date.now() - statSync(p).mtimeMs > 3_600_000)
        rmSync(p, { recursive: true, force: true });
    }
    const work = mkdtempSync(join(dirname(dir), '.pe-corpus-build-'));
    try {
      const debs = join(work, 'debs');
      mkdirSync(debs);
      chmodSync(work, 0o755); // apt's _apt user may write the download directly when run as root
      chmodSync(debs, 0o777);
      log(`pe-corpus: apt-get download ${CORPUS_PACKAGES.length} packages (~130 MB)`);
      const dl = run('apt-get', ['download', ...CORPUS_PACKAGES], debs);
      if (dl.status !== 0) throw new CorpusUnavailableError(aptFailure(dl.err));
      const packages: Record<string, string> = {};
      const candidates: Candidate[] = [];
      for (const deb of readdirSync(debs).filter((f) => f.endsWith('.deb'))) {
        const debPath = join(debs, deb);
        const [pkg, version] = run('dpkg-deb', ['-f', debPath, 'Package', 'Version'])
          .out.split('\n')
          .map((l) => l.replace(/^[A-Za-z]+: /, '').trim());
        if (!pkg || !version) throw new Error(`${deb}: no Package/Version in its control file`);
        packages[pkg] = version;
        const x = join(work, 'x', pkg);
        mkdirSync(x, { recursive: true });
        const r = run('dpkg-deb', ['-x', debPath, x]);
        if (r.status !== 0) throw new Error(`dpkg-deb -x ${deb}: ${r.err.trim()}`);
        rmSync(debPath);
        for (const abs of walkFiles(x)) {
          const pe = peHeader(abs);
          if (pe) candidates.push({ pkg, rel: '/' + relative(x, abs), abs, size: statSync(abs).size, pe });
        }
      }
      const missing = CORPUS_PACKAGES.filter((p) => !packages[p]);
      if (missing.length) throw new Error(`apt-get download did not fetch ${missing.join(' ')}`);
      const picks = selectCorpus(candidates);
      const stage = join(work, 'corpus');
      const files: CorpusFile[] = [];
      for (const { from, path } of picks.sort((a, b) => (a.path < b.path ? -1 : 1))) {
        const to = join(stage, path);
        mkdirSync(dirname(to), { recursive: true });
        copyFileSync(from.abs, to);
        chmodSync(to, 0o444); // tests read the corpus, never change it in place
        files.push({
          path,
          size: from.size,
          sha256: createHash('sha256').update(readFileSync(to)).digest('hex'),
          source: `${from.pkg}=${packages[from.pkg]}:${from.rel}`,
          ...from.pe,
        });
      }
      const manifest: CorpusManifest = { recipe: recipeId(), packages, files };
      writeFileSync(join(stage, MANIFEST), JSON.stringify(manifest, null, 1) + '\n');
      rmSync(dir, { recursive: true, force: true });
      renameSync(stage, dir);
      const mb = files.reduce((n, f) => n + f.size, 0) / 1e6;
      log(`pe-corpus: ${files.length} PE files, ${mb.toFixed(1)} MB, in ${dir}`);
      const built = readCorpus(dir);
      if (!built) throw new Error(`${dir}: the corpus just built does not read back`);
      return built;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}

/** Where a corpus file came from, from the manifest beside it (undefined for files not in one). */
export function corpusManifest(dir = corpusDir()): CorpusManifest | undefined {
  if (!existsSync(join(dir, MANIFEST))) return undefined;
  return JSON.parse(readFileSync(join(dir, MANIFEST), 'utf8')) as CorpusManifest;
}
