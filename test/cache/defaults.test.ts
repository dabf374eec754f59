import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  defaultCacheDir,
  loadOrCreateSecret,
  readSecretFile,
  SECRET_FILE_NAME,
} from '../../cache/defaults.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

test('defaultCacheDir: $MARSIGN_CACHE_DIR, else absolute $XDG_CACHE_HOME/marsign, else ~/.cache/marsign', () => {
  assert.equal(defaultCacheDir({ MARSIGN_CACHE_DIR: '/srv/c', XDG_CACHE_HOME: '/x' }), '/srv/c');
  assert.equal(defaultCacheDir({ MARSIGN_CACHE_DIR: 'rel' }), join(process.cwd(), 'rel'));
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/marsign');
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: 'relative' }), join(homedir(), '.cache', 'marsign'));
  assert.equal(defaultCacheDir({}), join(homedir(), '.cache', 'marsign'));
});

test('loadOrCreateSecret creates a private 32-byte secret once and reads it back', async () => {
  const dir = join(tempDir(), 'new', 'cache');
  const a = await loadOrCreateSecret(dir);
  const path = join(dir, SECRET_FILE_NAME);
  assert.equal(a.length, 32);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.match(readFileSync(path, 'latin1'), /^[0-9a-f]{64}\n$/);
  assert.deepEqual(await loadOrCreateSecret(dir), a);
  assert.deepEqual(await readSecretFile(path), a);
});

test('processes starting at once agree on one secret', async () => {
  const dir = tempDir();
  const script = `
    import { loadOrCreateSecret } from ${JSON.stringify(join(PROJECT_ROOT, 'cache/defaults.ts'))};
    process.stdout.write(Buffer.from(await loadOrCreateSecret(process.argv[1])).toString('hex'));
  `;
  const run = () =>
    new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], {
        cwd: PROJECT_ROOT,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
    });
  const outs = await Promise.all([run(), run(), run(), run()]);
  assert.equal(new Set(outs).size, 1);
  assert.equal(outs[0], readFileSync(join(dir, SECRET_FILE_NAME), 'latin1').trim());
});

test('bad secret files are ConfigErrors that never show the contents', async () => {
  const dir = tempDir();
  const path = join(dir, 's');
  const cases: [string, number, string][] = [
    ['ab'.repeat(32), 0o644, 'CACHE_SECRET_PERMISSIONS'],
    ['not hex at all, secret-ish text', 0o600, 'CACHE_SECRET_INVALID'],
    ['ab'.repeat(15), 0o600, 'CACHE_SECRET_TOO_SHORT'],
    ['a'.repeat(5000), 0o600, 'CACHE_SECRET_INVALID'],
  ];
  for (const [text, mode, code] of cases) {
    writeFileSync(path, text);
    chmodSync(path, mode);
    await assert.rejects(readSecretFile(path), (e: Error & { code?: string }) => {
      assert.equal(e.name, 'ConfigError');
      assert.equal(e.code, code);
      assert.ok(!e.message.includes(text.slice(0, 20)), e.message);
      return true;
    });
  }
  await assert.rejects(readSecretFile(join(dir, 'absent')), { code: 'CACHE_SECRET_UNREADABLE' });
  await assert.rejects(readSecretFile(dir), { code: 'CACHE_SECRET_UNREADABLE' });
  // An existing but broken secret is reported, not silently replaced (that would orphan every entry).
  writeFileSync(join(dir, SECRET_FILE_NAME), 'zz');
  chmodSync(join(dir, SECRET_FILE_NAME), 0o600);
  await assert.rejects(loadOrCreateSecret(dir), { code: 'CACHE_SECRET_INVALID' });
});
