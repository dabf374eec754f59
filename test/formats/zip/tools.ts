/**
 * Independent zip tools for the zip tests: Python's zipfile (writer and reader), Info-ZIP `zip`,
 * `unzip -t` and `zipinfo -v`. Sample zips made by them cover what real writers do: zip64 forced and
 * by entry count, data descriptors from streaming writes (signed, 32- and 64-bit), UTF-8 names, archive
 * and file comments, extra fields that differ between local and central headers.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const HAS_ZIP = spawnSync('sh', ['-c', 'command -v zip'], { encoding: 'utf8' }).status === 0;
export const ZIP_SKIP = HAS_ZIP ? undefined : 'skipped: the `zip` CLI is not installed (apt zip)';

export function python(script: string, args: string[] = [], input?: Uint8Array): Buffer {
  return execFileSync('python3', ['-c', script, ...args], {
    input: input ?? Buffer.alloc(0),
    maxBuffer: 1 << 30,
  });
}

/** Writes the Python-made sample zips into `dir`; returns their paths by name. */
const PY_WRITE = String.raw`
import io, struct, sys, zipfile, os
out = sys.argv[1]
class NoSeek(io.RawIOBase):
    def __init__(s): s.buf = bytearray()
    def writable(s): return True
    def write(s, b): s.buf += b; return len(b)
    def seekable(s): return False
def data(n, seed):
    # deterministic, compressible, with some binary
    words = [b'mozilla ', b'zip ', b'entry ', b'\x00\x01\x02', b'firefox\n', b'signed ']
    out = bytearray(); x = seed
    while len(out) < n:
        x = (x * 1103515245 + 12345) & 0x7fffffff
        out += words[x % len(words)]
    return bytes(out[:n])
def info(name, t=(2025, 6, 1, 12, 30, 10), extra=b'', comment=b'', mode=0o644):
    zi = zipfile.ZipInfo(name, date_time=t)
    zi.external_attr = (0o100000 | mode) << 16
    zi.extra = extra; zi.comment = comment
    return zi

# 1. deflate + stored, comments, a custom extra field, UTF-8 names, a directory
with zipfile.ZipFile(os.path.join(out, 'py-basic.zip'), 'w') as z:
    z.comment = b'archive comment \xe2\x9c\x93'
    d = zipfile.ZipInfo('firefox/', date_time=(2025, 6, 1, 12, 0, 0)); d.external_attr = (0o40755 << 16) | 0x10
    z.writestr(d, b'')
    z.writestr(info('firefox/firefox.exe', extra=struct.pack('<HH4s', 0xcafe, 4, b'abcd'), comment=b'main exe', mode=0o755), data(50000, 1), compress_type=zipfile.ZIP_DEFLATED)
    z.writestr(info('firefox/omni.ja'), data(30000, 2), compress_type=zipfile.ZIP_STORED)
    z.writestr(info('firefox/\u00fc/\u65e5\u672c.txt'), data(3000, 3), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    z.writestr(info('firefox/empty.txt'), b'', compress_type=zipfile.ZIP_DEFLATED)

# 2. zip64 forced on every entry (local zip64 extra, version 4.5)
with zipfile.ZipFile(os.path.join(out, 'py-zip64.zip'), 'w') as z:
    for i, name in enumerate(['a.dll', 'b.bin']):
        with z.open(info(name), 'w', force_zip64=True) as f: f.write(data(20000 + i, 10 + i))
with zipfile.ZipFile(os.path.join(out, 'py-zip64-deflate.zip'), 'w', compression=zipfile.ZIP_DEFLATED) as z:
    with z.open(info('c.dll'), 'w', force_zip64=True) as f: f.write(data(40000, 12))
    z.writestr(info('d.txt'), data(100, 13))

# 3. streaming writes to an unseekable file: data descriptors (zip64 ones for force_zip64)
ns = NoSeek()
with zipfile.ZipFile(ns, 'w', compression=zipfile.ZIP_DEFLATED) as z:
    z.comment = b'streamed'
    with z.open(info('s/one.dll'), 'w') as f: f.write(data(30000, 20))
    with z.open(info('s/two.txt'), 'w', force_zip64=True) as f: f.write(data(5000, 21))
    with z.open(info('s/\u00e9t\u00e9.txt'), 'w') as f: f.write(b'')
open(os.path.join(out, 'py-stream.zip'), 'wb').write(ns.buf)
ns = NoSeek()
with zipfile.ZipFile(ns, 'w', compression=zipfile.ZIP_STORED) as z:
    with z.open(info('stored.bin'), 'w') as f: f.write(data(7000, 22))
open(os.path.join(out, 'py-stream-stored.zip'), 'wb').write(ns.buf)

# 4. 70000 entries: the count needs the zip64 end record
with zipfile.ZipFile(os.path.join(out, 'py-many.zip'), 'w') as z:
    for i in range(70000):
        z.writestr(info('m/%05d' % i), b'%d' % i)
`;

export const PY_SAMPLES = [
  'py-basic.zip',
  'py-zip64.zip',
  'py-zip64-deflate.zip',
  'py-stream.zip',
  'py-stream-stored.zip',
  'py-many.zip',
];

export function writePythonSamples(dir: string): string[] {
  python(PY_WRITE, [dir]);
  return PY_SAMPLES.map((n) => join(dir, n));
}

export const ZIP_SAMPLES = ['zip-tree.zip', 'zip-stored.zip', 'zip-fz.zip', 'zip-stdin.zip', 'zip-pipe.zip'];

/** Info-ZIP zip samples (UT/ux extra fields differ between local and central headers). */
export function writeZipCliSamples(dir: string): string[] {
  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'firefox', 'browser'), { recursive: true });
  writeFileSync(join(tree, 'firefox', 'firefox.exe'), Buffer.alloc(40000, 'MZ firefox payload '));
  writeFileSync(join(tree, 'firefox', 'browser', 'omni.ja'), Buffer.alloc(20000, 'omni '));
  writeFileSync(join(tree, 'firefox', 'application.ini'), '[App]\nVendor=Mozilla\n');
  const sh = (cmd: string): void => {
    execFileSync('sh', ['-c', cmd], { cwd: tree, stdio: ['pipe', 'ignore', 'pipe'] });
  };
  // Fixed timestamps so the samples do not depend on when the test runs.
  sh('find . -exec touch -d "2025-06-01 12:00:00" {} +');
  sh(`printf 'Windows build\\n' | zip -q -r -z ../zip-tree.zip firefox`);
  sh('zip -q -r -0 ../zip-stored.zip firefox');
  sh('zip -q -r -fz ../zip-fz.zip firefox');
  sh('zip -q ../zip-stdin.zip - < firefox/application.ini');
  sh('zip -q -r - firefox | cat > ../zip-pipe.zip');
  return ZIP_SAMPLES.map((n) => join(dir, n));
}

/** Python's view of a zip: every entry's fields, and the sha256 of every entry read (CRC-checked by zipfile). */
const PY_DUMP = String.raw`
import hashlib, json, sys, zipfile
def dump(path):
  z = zipfile.ZipFile(path)
  out = {'comment': z.comment.hex(), 'entries': []}
  for i in z.infolist():
    out['entries'].append({
        'name': i.filename, 'flag_bits': i.flag_bits, 'compress_type': i.compress_type, 'CRC': i.CRC,
        'compress_size': i.compress_size, 'file_size': i.file_size, 'header_offset': i.header_offset,
        'date_time': list(i.date_time), 'external_attr': i.external_attr, 'internal_attr': i.internal_attr,
        'create_system': i.create_system, 'create_version': i.create_version, 'extract_version': i.extract_version,
        'comment': i.comment.hex(), 'sha256': hashlib.sha256(z.read(i)).hexdigest()})
  return out
print(json.dumps({p: dump(p) for p in sys.argv[1:]}))
`;

export interface PyEntry {
  name: string;
  flag_bits: number;
  compress_type: number;
  CRC: number;
  compress_size: number;
  file_size: number;
  header_offset: number;
  date_time: number[];
  external_attr: number;
  internal_attr: number;
  create_system: number;
  create_version: number;
  extract_version: number;
  comment: string;
  sha256: string;
}

export interface PyZip {
  comment: string;
  entries: PyEntry[];
}

/** Python's view of each zip (one Python process for all of them). */
export function pyDump(paths: string[]): Record<string, PyZip> {
  return JSON.parse(python(PY_DUMP, paths).toString()) as Record<string, PyZip>;
}

/** `unzip -t`: exit status 0 and "No errors detected". */
export function unzipTest(path: string): { ok: boolean; output: string } {
  const r = spawnSync('unzip', ['-t', path], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return { ok: r.status === 0 && /No errors detected/.test(r.stdout), output: r.stdout + r.stderr };
}

/**
 * `zipinfo -v`, split per central-directory entry, with the lines that name the archive or a position
 * (offsets, "extra bytes preceding", central directory placement) removed so two archives that differ only
 * in where things are can be compared.
 */
export function zipinfoEntries(path: string): { header: string; entries: string[] } {
  const text = execFileSync('zipinfo', ['-v', path], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const [head, ...rest] = text.split(/\nCentral directory entry #\d+:\n/);
  const clean = (s: string): string =>
    s
      .replace(/^Archive: .*$/m, '')
      .replace(/offset of local header from start of archive:\s+\d+\s+\([0-9A-F]+h\) bytes/, 'offset')
      .replace(/There are an extra \d+ bytes preceding this file\.\n/, '')
      .replace(/Zip archive file size:.*\n/, '')
      .replace(/Actual end-cent-dir record offset:.*\n/, '')
      .replace(/Expected end-cent-dir record offset:.*\n/, '')
      .replace(
        /The central directory is \d+ \([0-9A-F]+h\) bytes long,\n.*\n.*is \d+ \([0-9A-F]+h\)\./,
        'central directory',
      )
      .replace(/Actual offset of end-cent-dir record:.*\n/, '')
      .replace(/Expected offset of end-cent-dir record:.*\n/, '')
      .replace(/Offset of start of central directory:.*\n/, '')
      .replace(/Size of central directory:.*\n/, '');
  return { header: clean(head!), entries: rest.map(clean) };
}
