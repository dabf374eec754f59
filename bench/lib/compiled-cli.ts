/**
 * The CLI as users run it (`npx marsign` → compiled JS), built for a benchmark: the product
 * (tsconfig.build.json) compiled into a private folder, so the measured CLI is not the sources through
 * tsx (whose start-up compiles TypeScript on every run) and the shared dist/ is left alone.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/**
 * Compile into `outDir` and return the Node arguments that start its CLI. tsc emits even when another
 * engineer's file has a type error; only a missing entry point is fatal.
 */
export async function buildCli(
  projectRoot: string,
  outDir: string,
  log: (m: string) => void,
): Promise<string[]> {
  await rm(outDir, { recursive: true, force: true });
  const t0 = performance.now();
  const tsc = join(projectRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const { code, output } = await new Promise<{ code: number; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', outDir], {
      cwd: projectRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (c) => resolve({ code: c ?? -1, output: out }));
  });
  if (code !== 0)
    log(`tsc reported errors (JS still emitted): ${output.split('\n').slice(0, 3).join(' | ')}`);
  const main = join(outDir, 'src', 'cli', 'main.js');
  if (!existsSync(main)) throw new Error(`build failed: ${main} missing`);
  log(`compiled the CLI into ${outDir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return [main];
}
