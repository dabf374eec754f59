import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { PolicyError, UsageError } from '../../src/errors.js';
import { validateRelease } from '../../src/queue/manifest.js';
import { parseReleaseRequest } from '../../src/release/request.js';
import { PROJECT_ROOT, tempDir } from '../helpers/env.js';

const FIXTURE = join(PROJECT_ROOT, 'fixtures', 'release');

function setup() {
  const root = tempDir();
  const outside = tempDir();
  mkdirSync(join(root, 'in', 'de'), { recursive: true });
  copyFileSync(join(FIXTURE, 'de', 'complete.mar'), join(root, 'in', 'de', 'complete.mar'));
  writeFileSync(join(outside, 'secret.mar'), 'not yours');
  writeFileSync(join(root, 'in', 'notmar.mar'), 'hello, this is not a MAR file at all');
  const opts = { profiles: ['dev'], roots: [root], baseDir: root };
  return { root, outside, opts };
}

/** The queue's validation of a request document, as `POST /releases` does it. */
const validateManifest = async (doc: unknown, opts: Parameters<typeof validateRelease>[1]) =>
  validateRelease(parseReleaseRequest(doc), opts);

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
  await assert.rejects(validateManifest({ release: 'r1', profile: 'dev', locales: { de: 'x.mar' } }, opts), {
    code: 'RELEASE_OUTPUT_REQUIRED',
  });
  const viaFlag = await validateRelease(
    parseReleaseRequest({ release: 'r1', locales: { de: 'in/de/complete.mar' } }),
    { ...opts, output: join(root, 'flag') },
  );
  assert.equal(viaFlag.profile, 'dev', "the config's only profile when the request names none");
  assert.equal(viaFlag.locales[0]!.output, join(root, 'flag', 'de', 'complete.mar'));
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
    [{ ...good, locales: { 'de@x': { input: 'a', output: 'b' } } }, /locale "de@x"/],
    [
      { ...good, locales: { de: { input: 5, output: 'b' } } },
      /locales.de.input must be a non-empty string, found 5/,
    ],
    [{ ...good, locales: { de: { input: 'a', output: 'b', bytes: 'AAAA' } } }, /unknown field "bytes"/],
  ];
  for (const [doc, re] of cases) {
    assert.throws(
      () => parseReleaseRequest(doc),
      (e: unknown) => e instanceof UsageError && e.code === 'RELEASE_SCHEMA' && re.test(e.message),
      String(re),
    );
  }
});

test('unknown profile is refused', async () => {
  const { opts } = setup();
  await assert.rejects(validateManifest({ ...good, profile: 'prod' }, opts), {
    code: 'RELEASE_UNKNOWN_PROFILE',
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
      (e: unknown) => e instanceof PolicyError && e.code === 'RELEASE_PATH_TRAVERSAL',
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
    { code: 'RELEASE_PATH_ESCAPE' },
  );
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/de/complete.mar', output: outside } } }, opts),
    { code: 'RELEASE_PATH_ESCAPE' },
  );
});

test('a symlink inside a root that points outside is refused (realpath before the check)', async () => {
  const { root, outside, opts } = setup();
  symlinkSync(join(outside, 'secret.mar'), join(root, 'in', 'link.mar'));
  symlinkSync(outside, join(root, 'escape-dir'));
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/link.mar', output: 'out' } } }, opts),
    { code: 'RELEASE_PATH_ESCAPE' },
  );
  await assert.rejects(
    validateManifest(
      { ...good, locales: { de: { input: 'in/de/complete.mar', output: 'escape-dir/new/de' } } },
      opts,
    ),
    { code: 'RELEASE_PATH_ESCAPE' },
  );
});

test('missing inputs and inputs that are no supported container are refused with their own codes', async () => {
  const { opts } = setup();
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/nope.mar', output: 'out' } } }, opts),
    { code: 'RELEASE_INPUT_MISSING' },
  );
  await assert.rejects(
    validateManifest({ ...good, locales: { de: { input: 'in/notmar.mar', output: 'out' } } }, opts),
    (e: unknown) =>
      (e as Error).name === 'FormatError' &&
      (e as { code?: string }).code === 'ARCHIVE_UNKNOWN_FORMAT' &&
      /notmar\.mar/.test((e as Error).message),
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
    { code: 'RELEASE_DUPLICATE_OUTPUT' },
  );
});

test('one schema: a request sign-release reads (release.json) is one the queue reads, and vice versa', async () => {
  const { root, opts } = setup();
  const doc = JSON.parse(readFileSync(join(FIXTURE, 'release.json'), 'utf8')) as unknown;
  const parsed = parseReleaseRequest(doc);
  assert.equal(parsed.release, 'sample-140.0');
  assert.equal(parsed.locales.length, 5, 'four locale MARs and the win64 zip');
  // The queue resolves it (inputs relative to the base, outputs under --output) once the files exist.
  for (const l of parsed.locales) {
    mkdirSync(join(root, l.locale), { recursive: true });
    copyFileSync(join(FIXTURE, l.input), join(root, l.input));
  }
  const m = await validateRelease(parsed, { ...opts, output: join(root, 'signed') });
  assert.deepEqual(
    m.locales.map((l) => l.output),
    parsed.locales.map((l) => join(root, 'signed', l.locale, basename(l.input))),
  );
  // Names and sizes the old queue schema refused are the same for both now (no second parser).
  const many = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`l${i}`, `in/${i}.mar`]));
  assert.equal(parseReleaseRequest({ release: 'big', locales: many }).locales.length, 600);
  assert.equal(
    parseReleaseRequest({ release: 'z', locales: { target: 'target.zip' } }).locales[0]!.locale,
    'target',
  );
});
