/**
 * The progress display on a real pseudo-terminal (util-linux `script`): drawn in place on a TTY, and
 * nothing but the JSON with --json. stdout and stderr share the terminal, so any progress byte written
 * with --json would break the JSON below.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ReleaseReport } from '../../src/pipeline/release.js';
import { PROJECT_ROOT, tempDir, TSX_IMPORT } from '../helpers/env.js';
import { RELEASE } from '../pipeline/_support.js';

const SCRIPT = spawnSync('script', ['--version'], { encoding: 'utf8' });
const NO_SCRIPT =
  SCRIPT.status === 0 ? undefined : 'util-linux `script` is not installed (needed for a pseudo-terminal)';

/** The escape character, spelled so that no regular expression literal holds a control character. */
const ESC = String.fromCharCode(27);

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** `marsign ARGS` with stdout and stderr on a pseudo-terminal; everything it wrote, as the terminal got it. */
function onTty(args: string[], env: Record<string, string>): Promise<{ code: number; out: string }> {
  const cmd = [process.execPath, '--import', TSX_IMPORT, join(PROJECT_ROOT, 'src/cli/main.ts'), ...args]
    .map(quote)
    .join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', cmd, '/dev/null'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...env, COLUMNS: '160' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
  });
}

describe('sign-release on a terminal', { skip: NO_SCRIPT }, () => {
  test('progress lines are drawn in place; --json prints the report and nothing else', async () => {
    const dir = tempDir();
    const env = { MARSIGN_CACHE_DIR: join(dir, 'cache') };
    const shown = await onTty(['sign-release', RELEASE, '-o', join(dir, 'a')], env);
    assert.equal(shown.code, 0, shown.out);
    // The display ran: its overall line, and a redraw (cursor up, clear) before the summary.
    assert.match(shown.out, /release 0\/5 locales · 0 B\/\d+ KiB/);
    assert.match(shown.out, new RegExp(`${ESC}\\[\\d+A${ESC}\\[0J`));
    assert.match(shown.out, /\n {2}\S+ +(signing|writing|planning) /);

    const json = await onTty(['sign-release', RELEASE, '-o', join(dir, 'b'), '--json'], {
      MARSIGN_CACHE_DIR: join(dir, 'cache2'),
    });
    assert.equal(json.code, 0, json.out);
    assert.ok(
      !json.out.includes('\x1b'),
      `no escape codes with --json: ${JSON.stringify(json.out.slice(0, 200))}`,
    );
    const report = JSON.parse(json.out) as ReleaseReport;
    assert.equal(report.totals.locales, 5);
  });
});
