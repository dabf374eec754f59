/**
 * Long MAR and zip fuzz run, outside the default suite: `npm run fuzz`
 * (`node --import tsx test/fuzz/mar.fuzz.ts`). Environment:
 *   MAR_FUZZ_SECONDS  wall-clock budget per property (default 60)
 *   MAR_FUZZ_SEED     fast-check seed (default: random, printed so a failure can be replayed)
 *   FUZZ_FORMATS      `mar,zip` (default both)
 * MAR properties: mutated MARs give a consistent MarInfo or a FormatError with a MAR_ code (never another
 * exception, never an out-of-range read, never more bytes read than the file has); mutated compressed
 * entries give only CodedErrors when decompressed under a 4 MiB cap; a MAR whose passthrough entry is such a
 * mutated stream is either refused by sign-locale (a CodedError naming the entry, no output) or signed with
 * every passthrough entry decodable — never MAR-signed over an entry that cannot be unpacked.
 * Zip properties (test/formats/zip/mutate.ts): mutated zips and header-field edits give a FormatError with
 * a ZIP_ code, or entries that tile the file, decode or fail with a CodedError, are reproduced byte for byte
 * by the writer and rewrite readably with one entry replaced; mutated deflate streams give only CodedErrors
 * under a 4 MiB cap. Exits non-zero on the first failure, and if one case takes over 5 s (hang) or RSS
 * exceeds 1 GiB (unbounded memory).
 */
import fc from 'fast-check';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CodedError } from '../../src/errors.js';
import { loadConfig } from '../../src/config/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { FileSource } from '../../src/io/byte-source.js';
import { MarWriter } from '../../src/mar/writer.js';
import { Pipeline } from '../../src/pipeline/index.js';
import { PROJECT_ROOT } from '../../src/version.js';
import { compress, decompress } from '../../src/codecs/index.js';
import { inflateRaw } from '../../src/codecs/deflate.js';
import { readEntryData, readZip } from '../../src/formats/zip/index.js';
import { BufferSource } from '../../src/io/byte-source.js';
import { entryCodecOf, readEntryBytes, readMar } from '../../src/formats/mar/index.js';
import {
  applyHeaderEdit,
  applyMutation,
  headerEditArb,
  mutationArb,
  readMarProperty,
  seedMars,
} from '../formats/mar/mutate.js';
import { applyFieldEdit, fieldEditArb, fieldsOf, readZipProperty, seedZips } from '../formats/zip/mutate.js';

const SECONDS = Number(process.env.MAR_FUZZ_SECONDS ?? 60);
const SEED = Number(process.env.MAR_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const FORMATS = new Set((process.env.FUZZ_FORMATS ?? 'mar,zip').split(','));
const CASE_LIMIT_MS = 5000;
const RSS_LIMIT = 1024 * 1024 * 1024;

const seeds = seedMars();
const seedArb = fc.nat({ max: seeds.length - 1 }).map((i) => seeds[i]!);

let maxCaseMs = 0;
const codes = new Map<string, number>();
async function timed<T>(fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  const ms = performance.now() - t0;
  maxCaseMs = Math.max(maxCaseMs, ms);
  if (ms > CASE_LIMIT_MS) throw new Error(`one case took ${ms.toFixed(0)} ms`);
  if (process.memoryUsage().rss > RSS_LIMIT) throw new Error(`RSS ${process.memoryUsage().rss} bytes`);
  return r;
}
const count = (c: string): void => void codes.set(c, (codes.get(c) ?? 0) + 1);

async function run<T extends unknown[]>(name: string, prop: fc.IAsyncProperty<T>): Promise<void> {
  const t0 = Date.now();
  const out = await fc.check(prop, {
    seed: SEED,
    numRuns: Number.MAX_SAFE_INTEGER,
    interruptAfterTimeLimit: SECONDS * 1000,
    markInterruptAsFailure: false,
  });
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (out.failed) {
    console.error(fc.defaultReportMessage(out));
    console.error(`FAIL ${name} (seed ${SEED})`);
    process.exit(1);
  }
  console.log(`ok   ${name}: ${out.numRuns} cases in ${secs}s`);
}

if (FORMATS.has('mar')) {
  // Compressed entries of the seeds, for the decompression property.
  const compressed: Uint8Array[] = [];
  for (const s of seeds) {
    const src = new BufferSource(s);
    const info = await readMar(src);
    for (const e of info.entries) {
      const raw = await readEntryBytes(src, e);
      if (e.size > 0 && entryCodecOf(raw) !== 'none') compressed.push(raw);
    }
  }

  console.log(
    `MAR fuzz: ${seeds.length} seeds, ${compressed.length} compressed entries, ${SECONDS}s per property, seed ${SEED}`,
  );

  await run(
    'mutations',
    fc.asyncProperty(seedArb, fc.array(mutationArb, { minLength: 1, maxLength: 6 }), async (seed, muts) => {
      let b = seed;
      for (const { pos, m } of muts) b = applyMutation(b, pos, m);
      count(await timed(() => readMarProperty(b)));
    }),
  );

  await run(
    'header edits',
    fc.asyncProperty(
      seedArb,
      fc.array(headerEditArb, { minLength: 1, maxLength: 4 }),
      fc.array(mutationArb, { maxLength: 2 }),
      async (seed, edits, muts) => {
        let b = seed;
        for (const e of edits) b = applyHeaderEdit(b, e);
        for (const { pos, m } of muts) b = applyMutation(b, pos, m);
        count(await timed(() => readMarProperty(b)));
      },
    ),
  );

  if (compressed.length > 0) {
    await run(
      'mutated compressed entries',
      fc.asyncProperty(
        fc.nat({ max: compressed.length - 1 }),
        fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        async (i, muts) => {
          let b = compressed[i]!;
          for (const { pos, m } of muts) b = applyMutation(b, pos, m, 6);
          await timed(async () => {
            try {
              await decompress(b, { maxOutputSize: 4 * 1024 * 1024 });
              count('decoded');
            } catch (e) {
              if (!(e instanceof CodedError)) throw e;
              count(e.code);
            }
          });
        },
      ),
    );
    await signMutatedPassthrough(compressed);
  }
}

/**
 * sign-locale over MARs whose passthrough entry is a mutated compressed stream: refused (a CodedError naming
 * the entry, `details.check: 'passthrough'`, no output) or signed with every entry decodable.
 */
async function signMutatedPassthrough(compressed: Uint8Array[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'marsign-fuzz-'));
  const config = await loadConfig(join(PROJECT_ROOT, 'fixtures', 'release', 'marsign.config.json'));
  const pipeline = await Pipeline.create({ config, threads: 1, cache: null, outputCache: false });
  const pe = await compress(buildPe({ arch: 'x64', kind: 'exe', name: 'fuzz' }), { codec: 'bz2', level: 9 });
  let n = 0;
  try {
    await run(
      'sign-locale with a mutated passthrough entry',
      fc.asyncProperty(
        fc.nat({ max: compressed.length - 1 }),
        fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        async (i, muts) => {
          let b = compressed[i]!;
          for (const { pos, m } of muts) b = applyMutation(b, pos, m, 6);
          const input = join(dir, `in-${n}.mar`);
          const output = join(dir, `out-${n++}.mar`);
          const w = await MarWriter.create(input, { productInfo: { channel: 'fuzz', version: '1' } });
          await w.addEntry('firefox.exe', 0o755, pe);
          await w.addEntry('omni.ja', 0o644, b);
          await w.finish();
          await w.commit();
          try {
            await timed(() => signOrRefuse(pipeline, input, output));
          } finally {
            rmSync(input, { force: true });
            rmSync(output, { force: true });
          }
        },
      ),
    );
  } finally {
    await pipeline.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function signOrRefuse(pipeline: Pipeline, input: string, output: string): Promise<void> {
  try {
    await pipeline.signLocale({ profile: 'dev', input, output, writeManifest: false });
  } catch (e) {
    if (!(e instanceof CodedError)) throw e;
    if (e.details?.check !== 'passthrough' || !e.message.includes('omni.ja'))
      throw new Error(`refused without naming the passthrough entry: ${e.code}: ${e.message}`, { cause: e });
    if (existsSync(output)) throw new Error(`refused, but ${output} was written`, { cause: e });
    count(`refused passthrough ${e.code}`);
    return;
  }
  // Signed: the entry must decode (within the default bounds, as the pipeline checked it).
  const src = await FileSource.open(output);
  try {
    for (const e of (await readMar(src)).entries)
      if (e.name === 'omni.ja') await decompress(await readEntryBytes(src, e));
  } catch (e) {
    throw new Error(`MAR-signed over an entry that does not decode: ${String(e)}`, { cause: e });
  } finally {
    await src.close();
  }
  count('signed (passthrough decodes)');
}

if (FORMATS.has('zip')) {
  const zseeds = seedZips();
  const zfields = await Promise.all(zseeds.map((z) => fieldsOf(z)));
  const zseedArb = fc.nat({ max: zseeds.length - 1 });
  // Raw deflate streams of the seeds' method-8 entries, for the inflate property.
  const deflated: Uint8Array[] = [];
  for (const z of zseeds) {
    const src = new BufferSource(z);
    for (const e of (await readZip(src)).entries)
      if (e.method === 8 && e.compressedSize > 0) deflated.push(await readEntryData(src, e));
  }
  console.log(
    `zip fuzz: ${zseeds.length} seeds, ${deflated.length} deflate streams, ${SECONDS}s per property, seed ${SEED}`,
  );
  await run(
    'zip mutations',
    fc.asyncProperty(zseedArb, fc.array(mutationArb, { minLength: 1, maxLength: 6 }), async (i, muts) => {
      let b = zseeds[i]!;
      for (const { pos, m } of muts) b = applyMutation(b, pos, m);
      count(await timed(() => readZipProperty(b)));
    }),
  );
  await run(
    'zip header field edits',
    fc.asyncProperty(
      zseedArb,
      fc.array(fieldEditArb, { minLength: 1, maxLength: 4 }),
      fc.array(mutationArb, { maxLength: 2 }),
      async (i, edits, muts) => {
        let b = zseeds[i]!;
        for (const e of edits) b = applyFieldEdit(b, zfields[i]!, e);
        for (const { pos, m } of muts) b = applyMutation(b, pos, m);
        count(await timed(() => readZipProperty(b)));
      },
    ),
  );
  if (deflated.length > 0) {
    await run(
      'mutated deflate streams',
      fc.asyncProperty(
        fc.nat({ max: deflated.length - 1 }),
        fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        async (i, muts) => {
          let b = deflated[i]!;
          for (const { pos, m } of muts) b = applyMutation(b, pos, m, 0);
          await timed(async () => {
            try {
              await inflateRaw(b, { maxOutputSize: 4 * 1024 * 1024 });
              count('inflated');
            } catch (e) {
              if (!(e instanceof CodedError)) throw e;
              count(e.code);
            }
          });
        },
      ),
    );
  }
}

console.log(
  `max case ${maxCaseMs.toFixed(1)} ms; peak RSS ≤ ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`,
);
console.log('outcomes:', Object.fromEntries([...codes].sort((a, b) => b[1] - a[1])));
