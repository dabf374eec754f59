import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { AtomicFile, removeStaleTemps, STALE_LIVE_TEMP_MS, writeFileAtomic } from '../../src/io/atomic.js';
import { deadPid, tempDir } from '../helpers/env.js';

test("removeStaleTemps: temps of dead processes go; a live process's (or this one's) stay until old; other names stay", async () => {
  const dir = tempDir();
  const dead = deadPid();
  const live = process.ppid; // the test runner: alive
  const names = {
    dead: `.out.mar.${dead}.a1b2c3d4e5f6.tmp`,
    deadManifest: `.out.mar.manifest.json.${dead}.a1b2c3d4e5f7.tmp`,
    deadOther: `.other.mar.${dead}.a1b2c3d4e5f8.tmp`,
    live: `.out.mar.${live}.a1b2c3d4e5f9.tmp`,
    liveOld: `.out.mar.${live}.a1b2c3d4e5fa.tmp`,
    mine: `.out.mar.${process.pid}.a1b2c3d4e5fb.tmp`,
    noPid: `.out.mar.0.a1b2c3d4e5fc.tmp`,
    hugePid: `.out.mar.9999999999.a1b2c3d4e5fd.tmp`,
    notOurs: `.out.mar.${dead}.tmp`,
    plain: 'out.mar',
  };
  for (const n of Object.values(names)) writeFileSync(join(dir, n), 'x');
  const old = (Date.now() - STALE_LIVE_TEMP_MS - 60_000) / 1000;
  utimesSync(join(dir, names.liveOld), old, old);
  // A directory with a temp name is not a temp (and never recursed into); a link is unlinked itself.
  mkdirSync(join(dir, `.out.mar.${dead}.a1b2c3d4e5fe.tmp`));
  const outside = tempDir();
  writeFileSync(join(outside, 'keep'), 'keep');
  symlinkSync(join(outside, 'keep'), join(dir, `.out.mar.${dead}.a1b2c3d4e5ff.tmp`));

  const removed = await removeStaleTemps(dir, { names: ['out.mar', 'out.mar.manifest.json'] });
  assert.deepEqual(
    removed.sort(),
    [
      names.dead,
      names.deadManifest,
      names.liveOld,
      names.noPid,
      names.hugePid,
      `.out.mar.${dead}.a1b2c3d4e5ff.tmp`,
    ].sort(),
  );
  for (const n of removed) assert.equal(existsSync(join(dir, n)), false);
  for (const n of [names.deadOther, names.live, names.mine, names.notOurs, names.plain])
    assert.ok(existsSync(join(dir, n)), `${n} kept`);
  assert.ok(lstatSync(join(dir, `.out.mar.${dead}.a1b2c3d4e5fe.tmp`)).isDirectory());
  assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'keep', 'a link target is never touched');

  // Without names: every AtomicFile temp of a dead process.
  assert.deepEqual(await removeStaleTemps(dir), [names.deadOther]);
  assert.deepEqual(await removeStaleTemps(join(dir, 'missing')), []);
});

test('AtomicFile never writes through a symlink at its temp name; commit replaces a link at the target name', async () => {
  const dir = tempDir();
  const outside = tempDir();
  writeFileSync(join(outside, 'victim'), 'victim');
  symlinkSync(join(outside, 'victim'), join(dir, 'target'));
  await writeFileAtomic(join(dir, 'target'), 'new');
  assert.ok(lstatSync(join(dir, 'target')).isFile(), 'the link itself was replaced');
  assert.equal(readFileSync(join(dir, 'target'), 'utf8'), 'new');
  assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'victim');
  const f = await AtomicFile.create(join(dir, 'other'));
  await f.abort();
  assert.deepEqual(readdirSync(dir), ['target']);
});
