/**
 * Open-time path confinement (src/io/confine.ts) on real files: links anywhere below a root are refused,
 * not followed; nothing is created or written outside; a FIFO does not hang; what was opened stays what is
 * read and renamed even when its path is swapped afterwards.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openArchive } from '../../src/archive/registry.js';
import { PolicyError } from '../../src/errors.js';
import { AtomicFile, writeFileAtomic } from '../../src/io/atomic.js';
import { FileSource } from '../../src/io/byte-source.js';
import { Confinement } from '../../src/io/confine.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

/** A root with one input, and a directory outside it holding bait. */
function layout(): { root: string; outside: string; input: string; bait: string } {
  const base = tempDir('marsign-confine-');
  const root = join(base, 'root');
  const outside = join(base, 'outside');
  mkdirSync(join(root, 'in'), { recursive: true });
  mkdirSync(outside);
  const input = join(root, 'in', 'complete.mar');
  writeFileSync(input, 'inside bytes');
  const bait = join(outside, 'bait.mar');
  writeFileSync(bait, 'outside bytes');
  return { root, outside, input, bait };
}

async function refused(p: Promise<unknown>, code: string): Promise<PolicyError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof PolicyError, `expected a PolicyError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

async function read(c: Confinement, path: string): Promise<string> {
  const src = await c.openInput(path);
  try {
    return Buffer.from(await src.read(0, src.size)).toString();
  } finally {
    await src.close();
  }
}

describe('Confinement', { skip: process.platform !== 'linux' && 'needs Linux /proc/self/fd' }, () => {
  test('a regular file inside a root opens; its reopenPath is the same file after a swap', async () => {
    const { root, input, bait } = layout();
    const c = await Confinement.create([root]);
    const src = await c.openInput(input);
    try {
      assert.equal(src.path, input);
      // The path now names a link to the bait: the source, and its reopenPath, still read the original.
      renameSync(input, `${input}.old`);
      symlinkSync(bait, input);
      assert.equal(readFileSync(src.reopenPath, 'utf8'), 'inside bytes');
      assert.equal(Buffer.from(await src.read(0, src.size)).toString(), 'inside bytes');
    } finally {
      await src.close();
    }
  });

  test('a symbolic link as the final component is refused (outside or inside), naming its target', async () => {
    const { root, input, bait } = layout();
    const c = await Confinement.create([root]);
    const out = join(root, 'in', 'to-outside.mar');
    symlinkSync(bait, out);
    const e = await refused(c.openInput(out), 'PATH_ESCAPE');
    assert.equal(e.details?.target, bait);
    assert.equal(e.details?.resolved, bait);
    assert.match(e.message, /symbolic link/);
    const inner = join(root, 'in', 'to-inside.mar');
    symlinkSync(input, inner);
    await refused(c.openInput(inner), 'PATH_ESCAPE');
  });

  test('a symbolic link as a parent directory is refused', async () => {
    const { root, outside } = layout();
    const c = await Confinement.create([root]);
    symlinkSync(outside, join(root, 'linked'));
    const e = await refused(c.openInput(join(root, 'linked', 'bait.mar')), 'PATH_ESCAPE');
    assert.equal(e.details?.component, join(root, 'linked'));
    assert.equal(e.details?.resolved, outside);
  });

  test('`..` out of the root, written or through a link, is refused', async () => {
    const { root, outside } = layout();
    const c = await Confinement.create([root]);
    await refused(c.openInput(join(root, '..', 'outside', 'bait.mar')), 'PATH_ESCAPE');
    symlinkSync('..', join(root, 'up'));
    await refused(c.openInput(join(root, 'up', 'outside', 'bait.mar')), 'PATH_ESCAPE');
    await refused(c.openDir(outside), 'PATH_ESCAPE');
  });

  test('a hard link inside the root is the file inside', async () => {
    const { root, input } = layout();
    const c = await Confinement.create([root]);
    const hard = join(root, 'hard.mar');
    linkSync(input, hard);
    assert.equal(await read(c, hard), 'inside bytes');
  });

  test('a FIFO or a directory as input is refused at once (PATH_NOT_FILE), without blocking', async () => {
    const { root } = layout();
    const c = await Confinement.create([root]);
    const fifo = join(root, 'in', 'fifo.mar');
    execFileSync('mkfifo', [fifo]);
    // Opening a FIFO for reading without O_NONBLOCK waits for a writer forever.
    const timeout = new Promise((_, rej) =>
      setTimeout(() => rej(new Error('open blocked on the FIFO')), 5_000),
    );
    await Promise.race([refused(c.openInput(fifo), 'PATH_NOT_FILE'), timeout]);
    await refused(c.openInput(join(root, 'in')), 'PATH_NOT_FILE');
  });

  test('openDir creates missing directories inside, and none through a link', async () => {
    const { root, outside } = layout();
    const c = await Confinement.create([root]);
    const d = await c.openDir(join(root, 'out', 'a', 'b'), { create: true });
    await d.close();
    assert.ok(existsSync(join(root, 'out', 'a', 'b')));
    symlinkSync(outside, join(root, 'out', 'linked'));
    const before = readdirSync(outside);
    await refused(c.openDir(join(root, 'out', 'linked', 'new', 'dir'), { create: true }), 'PATH_ESCAPE');
    assert.deepEqual(readdirSync(outside), before);
    writeFileSync(join(root, 'file'), '');
    await refused(c.openDir(join(root, 'file', 'x'), { create: true }), 'PATH_NOT_DIRECTORY');
  });

  test('outputs: written inside; a linked output directory gets nothing and keeps no temp', async () => {
    const { root, outside, bait } = layout();
    const c = await Confinement.create([root]);
    mkdirSync(join(root, 'out'));
    await writeFileAtomic(join(root, 'out', 'x.mar'), 'signed', 0o644, { confine: c });
    assert.equal(readFileSync(join(root, 'out', 'x.mar'), 'utf8'), 'signed');
    assert.deepEqual(readdirSync(join(root, 'out')), ['x.mar']);

    symlinkSync(outside, join(root, 'out-linked'));
    const before = readdirSync(outside).sort();
    await refused(
      writeFileAtomic(join(root, 'out-linked', 'x.mar'), 'signed', 0o644, { confine: c }),
      'PATH_ESCAPE',
    );
    assert.deepEqual(readdirSync(outside).sort(), before);

    // An output name that is a link: the rename replaces the link, the file it pointed at is untouched.
    symlinkSync(bait, join(root, 'out', 'y.mar'));
    await writeFileAtomic(join(root, 'out', 'y.mar'), 'signed', 0o644, { confine: c });
    assert.equal(readFileSync(bait, 'utf8'), 'outside bytes');
    assert.equal(readFileSync(join(root, 'out', 'y.mar'), 'utf8'), 'signed');
  });

  test('an output directory swapped for a link after the temp file was made: the rename stays put', async () => {
    const { root, outside } = layout();
    const c = await Confinement.create([root]);
    const out = join(root, 'out');
    mkdirSync(out);
    const f = await AtomicFile.create(join(out, 'x.mar'), 0o644, { confine: c });
    await f.write(Buffer.from('signed'));
    renameSync(out, join(root, 'moved'));
    symlinkSync(outside, out);
    const before = readdirSync(outside).sort();
    await f.commit();
    assert.deepEqual(readdirSync(outside).sort(), before);
    assert.deepEqual(readdirSync(join(root, 'moved')), ['x.mar']);
  });

  test('abort removes the temp file through the pinned directory', async () => {
    const { root } = layout();
    const c = await Confinement.create([root]);
    mkdirSync(join(root, 'out'));
    const f = await AtomicFile.create(join(root, 'out', 'x.mar'), 0o644, { confine: c });
    assert.match(f.tempPath, /^\/proc\/self\/fd\/\d+\/\.x\.mar\.\d+\.[0-9a-f]+\.tmp$/);
    assert.equal(readdirSync(join(root, 'out')).length, 1);
    await f.abort();
    assert.deepEqual(readdirSync(join(root, 'out')), []);
  });

  test('a nested root swapped for a link is refused (the walk starts at the outer root)', async () => {
    const { root, outside } = layout();
    const inner = join(root, 'inner');
    mkdirSync(inner);
    const c = await Confinement.create([inner, root]);
    writeFileSync(join(inner, 'x.mar'), 'inner bytes');
    assert.equal(await read(c, join(inner, 'x.mar')), 'inner bytes');
    renameSync(inner, join(root, 'inner-old'));
    symlinkSync(outside, inner);
    const e = await refused(c.openInput(join(inner, 'bait.mar')), 'PATH_ESCAPE');
    assert.equal(e.details?.component, inner);
  });

  test('both containers write through the confinement: createWriter(path, signing, { confine })', async () => {
    const { root, outside } = layout();
    const c = await Confinement.create([root]);
    mkdirSync(join(root, 'out'));
    symlinkSync(outside, join(root, 'out-linked'));
    for (const sample of ['en-US/complete.mar', 'target.zip']) {
      const src = await FileSource.open(join(PROJECT_ROOT, 'fixtures', 'release', sample));
      try {
        const archive = await openArchive(src, sample);
        const name = `x.${archive.format}`;
        const w = await archive.createWriter(join(root, 'out', name), {}, { confine: c });
        assert.match(
          w.tempPath,
          /^\/proc\/self\/fd\/\d+\//,
          `${archive.format} temp through the directory's descriptor`,
        );
        await w.abort();
        await refused(
          archive.createWriter(join(root, 'out-linked', name), {}, { confine: c }),
          'PATH_ESCAPE',
        );
      } finally {
        await src.close();
      }
    }
    assert.deepEqual(readdirSync(join(root, 'out')), []);
    assert.deepEqual(readdirSync(outside), ['bait.mar']);
  });

  test('paths outside every root are refused before anything is opened', async () => {
    const { root, bait } = layout();
    const c = await Confinement.create([root]);
    await refused(c.openInput(bait), 'PATH_ESCAPE');
    assert.throws(
      () => c.rootOf('/etc/passwd'),
      (e: unknown) => e instanceof PolicyError && e.code === 'PATH_ESCAPE',
    );
  });
});
