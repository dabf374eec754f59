import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { PolicyError, UsageError } from '../../src/errors.js';
import { checkMarFile, parseManifestShape, validateManifest } from '../../src/queue/manifest.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

const FIXTURE = join(PROJECT_ROOT, 'fixtures', 'release');

function setup() {
  const root = tempDir();
  const outside = tempDir();
  mkdirSync(join(root, 'in', 'de'), { recursive: true });
  copyFileSync(join(FIXTURE, 'de', 'complete.mar'), join(root, 'in', 'de', 'complete.mar'));
  writeFileSync(join(outside, 'secret.mar'), 'not yours');
  writeFileSync(join(root, 'in', 'notmar.mar'), 'hello, this is not a MAR file at all');
  const opts = { profiles: ['dev'], roots: [root], baseDir: root, checkMar: checkMarFile };
  return { root, outside, opts };
}

const good = {
  release: 'fx-1.0',
  profile: 'dev',
  locales: { de: { input: 'in/de/complete.mar', output: 'out/de' } },
};

test('a good manifest resolves absolute real paths and the output file name', async () => {
  const { root, opts } = setup();
  const m = await validateManifest(good, opts);
  assert.equal(m.release, 'fx-1.0');
  assert.equal(m.locales.length, 1);
  assert.equal(m.locales[0]!.input, join(root, 'in', 'de', 'complete.mar'));
  assert.equal(m.locales[0]!.output, join(root, 'out', 'de', 'complete.mar'));
});

test('the sign-release form (locale → input path) takes its output from the top-level output', async () => {
  const { root, opts } = setup();
  const m = await validateManifest(
    { release: 'r1', profile: 'dev', output: 'signed', locales: { de: 'in/de/complete.mar' } },
    opts,
  );
  assert.equal(m.locales[0]!.output, join(root, 'signed', 'de', 'complete.mar'));
  assert.throws(() => parseManifestShape({ release: 'r1', profile: 'dev', locales: { de: 'x.mar' } }), {
    code: 'MANIFEST_SCHEMA',
  });
});

test('schema rules: each names the field and the value found', () => {
  const cases: [unknown, RegExp][] = [
    [[], /JSON object/],
    [{ ...good, extra: 1 }, /unknown field "extra"/],
    [{ ...good, release: '12345' }, /release must match/],
    [{ ...good, release: 'a:b' }, /"a:b"/],
    [{ ...good, profile: '' }, /profile must match/],
    [{ ...good, locales: {} }, /locales is empty/],
    [{ ...good, locales: { 'Not A Locale': { input: 'a', output: 'b' } } }, /locale "Not A Locale"/],
    [
      { ...good, locales: { de: { input: 5, output: 'b' } } },
      /locales.de.input must be a non-empty string, found 5/,
    ],
    [{ ...good, locales: { de: { input: 'a', output: 'b', bytes: 'AAAA' } } }, /unknown field "bytes"/],
  ];
  for (const [doc, re] of cases) {
    assert.throws(
      () => parseManifestShape(doc),
      (e: unknown) => e instanceof UsageError && e.code === 'MANIFEST_SCHEMA' && re.test(e.message),
      String(re),
    );
  }
});

test('unknown profile is refused', async () => {
  const { opts } = setup();
  await assert.rejects(validateManifest({ ...good, profile: 'prod' }, opts), {
    code: 'MANIFEST_UNKNOWN_PROFILE',
  });
});

test("'..' segments are refused outright, in inputs and outputs", async () => {
  const { opts } = setup();
  for (const l of [
    { input: '../x/complete.mar', output: 'out' },
    { input: 'in/de/complete.mar', output: 'out/../../etc' },
  ]) {
    await assert.rejects(
      validateManifest({ ...good, locales: { de: l } }, opts),
      (e: unknown) => e instanceof PolicyError && e.code === 'MANIFEST_PATH_TRAVERSAL',
    );
  }
});

test('absolute paths outside the roots are refused', async () => {
  const { outside, opts } = setup();
  await assert.rejects(
    validateManifest(
      { ...good, locales: { de: { input: join(outside, 'secret.mar'), output: 'out' } } },
      opts,
    ),
    { code: 'MANIFEST_PATH_ESCAPE' },
  );
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/de/complete.mar', output: outside } } }, opts),
    { code: 'MANIFEST_PATH_ESCAPE' },
  );
});

test('a symlink inside a root that points outside is refused (realpath before the check)', async () => {
  const { root, outside, opts } = setup();
  symlinkSync(join(outside, 'secret.mar'), join(root, 'in', 'link.mar'));
  symlinkSync(outside, join(root, 'escape-dir'));
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/link.mar', output: 'out' } } }, opts),
    { code: 'MANIFEST_PATH_ESCAPE' },
  );
  await assert.rejects(
    validateManifest(
      { ...good, locales: { de: { input: 'in/de/complete.mar', output: 'escape-dir/new/de' } } },
      opts,
    ),
    { code: 'MANIFEST_PATH_ESCAPE' },
  );
});

test('missing inputs and non-MAR inputs are refused with their own codes', async () => {
  const { opts } = setup();
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/nope.mar', output: 'out' } } }, opts),
    { code: 'MANIFEST_INPUT_MISSING' },
  );
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/notmar.mar', output: 'out' } } }, opts),
    (e: unknown) => (e as Error).name === 'FormatError' && /notmar\.mar/.test((e as Error).message),
  );
});

test('two locales writing the same output are refused', async () => {
  const { opts } = setup();
  await assert.rejects(
    validateManifest(
      {
        ...good,
        locales: {
          de: { input: 'in/de/complete.mar', output: 'out' },
          fr: { input: 'in/de/complete.mar', output: 'out' },
        },
      },
      opts,
    ),
    { code: 'MANIFEST_OUTPUT_CLASH' },
  );
});
