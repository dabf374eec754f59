/**
 * Child-process entry for the baseline (see baseline.ts): signs the given MARs one after the other and
 * prints one JSON line per MAR on stdout.
 *   node --import tsx bench/lib/baseline-cli.ts --config CFG --profile P --work DIR IN OUT [IN OUT ...]
 */
import { mkdir } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadConfig } from '../../src/config/index.js';
import { baselineLocale } from './baseline.js';

const { values, positionals } = parseArgs({
  options: {
    config: { type: 'string' },
    profile: { type: 'string', default: 'dev' },
    work: { type: 'string' },
  },
  allowPositionals: true,
});
if (!values.config || !values.work || positionals.length === 0 || positionals.length % 2 !== 0) {
  console.error('usage: baseline-cli.ts --config CFG [--profile P] --work DIR IN OUT [IN OUT ...]');
  process.exit(2);
}
const config = await loadConfig(values.config);
await mkdir(values.work, { recursive: true });
for (let i = 0; i < positionals.length; i += 2) {
  const r = await baselineLocale({
    input: positionals[i] as string,
    output: positionals[i + 1] as string,
    workDir: values.work,
    config,
    profile: values.profile ?? 'dev',
  });
  process.stdout.write(JSON.stringify(r) + '\n');
}
