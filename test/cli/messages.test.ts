/**
 * The messages a user sees when something is wrong (issue 11 item 7), one CLI run each: the exact code,
 * the entry / path / URL named, the code printed once, and never a temp name (`.tmp`, `.extract-`).
 * Also covered elsewhere: CACHE_NOT_FOUND (test/cli/cache.test.ts), a garbage TSA reply on sign-pe
 * (test/cli/timestamp.test.ts), a failed locale's entry in service status, the 401 body and
 * /__version__ (test/service/service.test.ts).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { compress } from '../../src/codecs/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { runCli, tempDir } from '../helpers/env.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { rawZip } from '../formats/zip/raw-zip.js';
import { startTsa, type TestTsa } from '../helpers/tsa.js';
import { BZ2, buildMar, CONFIG_PATH, KEYS, fixtureMar } from '../pipeline/_support.js';

const dir = tempDir('marsign-cli-messages-');
const tsaDir = tempDir('marsign-tsa-garbage-');
const env = { MARSIGN_CACHE_DIR: join(dir, 'cache'), MARSIGN_CONFIG: '' };
const cfg = ['-c', CONFIG_PATH];
const pe = join(dir, 'in.exe');
writeFileSync(pe, buildPe({ arch: 'x64', name: 'messages', payload: new Uint8Array(3000).fill(5) }));

/** No temp name of ours in anything the user sees. */
function noTempNames(text: string): void {
  assert.doesNotMatch(text, /\.tmp\b|\.extract-/, text);
}

/** The single `marsign: CODE: …` line on stderr (the config line of sign-pe/sign-mar aside). */
function errorLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .filter((l) => l.startsWith('marsign: ') && !l.startsWith('marsign: config '));
  assert.equal(lines.length, 1, stderr);
  return lines[0]!;
}

test('a missing input: the errno code once (not `ENOENT: ENOENT:`), the path named', async () => {
  const missing = join(dir, 'no-such-input.exe');
  const r = await runCli(['sign-pe', missing, '-o', join(dir, 'x.exe'), ...cfg], { env });
  assert.equal(r.code, 2);
  assert.equal(errorLine(r.stderr), `marsign: ENOENT: no such file or directory, open '${missing}'`);
  const json = await runCli(['sign-pe', missing, '-o', join(dir, 'x.exe'), ...cfg, '--json'], { env });
  assert.equal((JSON.parse(json.stdout) as { error: { code: string } }).error.code, 'ENOENT');
});

test('a missing output directory: OUTPUT_DIR_NOT_FOUND naming the output and its directory, no temp name', async () => {
  const gone = join(dir, 'no-such-dir');
  const cases: [string, string[]][] = [
    [join(gone, 'signed.exe'), ['sign-pe', pe]],
    [join(gone, 'signed.mar'), ['sign-mar', fixtureMar('de')]],
    [join(gone, 'locale.mar'), ['sign-locale', fixtureMar('de'), '-t', '2']],
  ];
  for (const [out, args] of cases) {
    const r = await runCli([...args, '-o', out, ...cfg], { env });
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
    assert.equal(
      errorLine(r.stderr),
      `marsign: OUTPUT_DIR_NOT_FOUND: cannot write ${out}: its directory ${gone} does not exist`,
      args[0],
    );
    noTempNames(r.stderr + r.stdout);
  }
  const x = await runCli(['mar', 'extract', fixtureMar('de'), join(gone, 'dest')]);
  assert.equal(x.code, 2);
  assert.equal(
    errorLine(x.stderr),
    `marsign: OUTPUT_DIR_NOT_FOUND: cannot extract into ${join(gone, 'dest')}: its directory ${gone} does not exist`,
  );
  noTempNames(x.stderr);
  assert.ok(!existsSync(gone));
});

test('a corrupt compressed entry: CODEC_CORRUPT naming the entry (sign-locale, sign-release, mar extract)', async () => {
  const src = join(dir, 'corrupt', 'de', 'complete.mar');
  const data = buildPe({
    arch: 'x64',
    name: 'corrupt',
    payload: new Uint8Array(200_000).map((_, i) => (i * 7919) % 251),
  });
  mkdirSync(dirname(src), { recursive: true });
  await buildMar(src, [
    { name: 'readme.txt', data: Buffer.from('hello'), codec: BZ2 },
    { name: 'x/y.dll', data, codec: BZ2 },
  ]);
  // Flip bytes inside the bzip2 stream of x/y.dll (found by its compressed bytes): it still parses.
  const buf = readFileSync(src);
  const z = await compress(data, BZ2);
  const at = buf.indexOf(Buffer.from(z).subarray(0, 64));
  assert.ok(at > 0);
  for (let i = at + 40; i < at + 48; i++) buf[i]! ^= 0x55;
  writeFileSync(src, buf);
  const expected = 'marsign: CODEC_CORRUPT: entry "x/y.dll": libbzip2: BZ_DATA_ERROR';

  const locale = await runCli(['sign-locale', src, '-o', join(dir, 'corrupt-out.mar'), '-t', '2', ...cfg], {
    env,
  });
  assert.equal(locale.code, 2, locale.stderr);
  assert.equal(errorLine(locale.stderr), expected);
  assert.ok(!existsSync(join(dir, 'corrupt-out.mar')));

  const release = await runCli(
    ['sign-release', join(dir, 'corrupt'), '-o', join(dir, 'corrupt-rel'), '--no-progress', ...cfg],
    { env },
  );
  assert.equal(release.code, 2, release.stderr);
  assert.match(
    release.stderr,
    /^marsign: CODEC_CORRUPT: locale de: entry "x\/y\.dll": libbzip2: BZ_DATA_ERROR$/m,
  );

  const x = await runCli(['mar', 'extract', '--decompress', src, join(dir, 'corrupt-x')]);
  assert.equal(x.code, 2);
  assert.equal(errorLine(x.stderr), expected);
  noTempNames(x.stderr);
  assert.ok(!existsSync(join(dir, 'corrupt-x')));
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.includes('.extract-')),
    [],
    'no extraction temp left',
  );
});

test('mar extract of `a/b` then `a` (and `a` then `a/b`): MAR_UNSAFE_EXTRACT naming both entries', async () => {
  const none = { codec: 'none' } as const;
  const fileThenDir = join(dir, 'clash1.mar');
  await buildMar(fileThenDir, [
    { name: 'a/b', data: Buffer.from('b'), codec: none },
    { name: 'a', data: Buffer.from('a'), codec: none },
  ]);
  const r1 = await runCli(['mar', 'extract', fileThenDir, join(dir, 'clash1')]);
  assert.equal(r1.code, 2, r1.stderr);
  assert.match(
    errorLine(r1.stderr),
    /^marsign: MAR_UNSAFE_EXTRACT: "a" is a file where "a\/b" \(extracted before\) needs the directory "a"( \(at offset \d+\))?$/,
  );
  noTempNames(r1.stderr);

  const dirThenFile = join(dir, 'clash2.mar');
  await buildMar(dirThenFile, [
    { name: 'a', data: Buffer.from('a'), codec: none },
    { name: 'a/b', data: Buffer.from('b'), codec: none },
  ]);
  const r2 = await runCli(['mar', 'extract', dirThenFile, join(dir, 'clash2')]);
  assert.equal(r2.code, 2, r2.stderr);
  assert.match(
    errorLine(r2.stderr),
    /^marsign: MAR_UNSAFE_EXTRACT: "a\/b" needs the directory "a" where "a" \(extracted before\) is a file/,
  );
  noTempNames(r2.stderr);
  assert.ok(!existsSync(join(dir, 'clash1')) && !existsSync(join(dir, 'clash2')));
});

test('zip extract of `a/b` then `a`: ZIP_UNSAFE_EXTRACT naming both entries, no temp name', async () => {
  const zip = join(dir, 'clash.zip');
  const content = new TextEncoder().encode('x');
  writeFileSync(
    zip,
    rawZip({
      entries: [
        { name: 'a/b', content },
        { name: 'a', content },
      ],
    }),
  );
  const r = await runCli(['mar', 'extract', zip, join(dir, 'zclash')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    errorLine(r.stderr),
    /^marsign: ZIP_UNSAFE_EXTRACT: "a" is a file where "a\/b" \(extracted before\) needs the directory "a"/,
  );
  noTempNames(r.stderr);
  assert.ok(!existsSync(join(dir, 'zclash')));
});

describeRedis();

function describeRedis(): void {
  let redis: TestRedis | undefined;
  const password = 'correct-horse-battery';
  before(async () => {
    if (!REDIS_SKIP) redis = await TestRedis.start(undefined, { password });
  });
  after(() => redis?.stop());

  test(
    'a wrong or missing Redis password: REDIS_AUTH_FAILED, authentication failed; no secret shown',
    { skip: REDIS_SKIP },
    async () => {
      const cwd = tempDir('marsign-noconf-');
      const url = (pw: string) => `redis://${pw ? `:${pw}@` : ''}127.0.0.1:${redis!.port}`;
      const wrong = await runCli(['status'], {
        env: { ...env, MARSIGN_REDIS_URL: url('not-the-password') },
        cwd,
      });
      assert.equal(wrong.code, 2, wrong.stderr);
      assert.equal(
        errorLine(wrong.stderr),
        `marsign: REDIS_AUTH_FAILED: Redis at redis://127.0.0.1:${redis!.port}/0: authentication failed: the password (redis.passwordEnv or the URL) or user is wrong`,
      );
      assert.ok(!(wrong.stderr + wrong.stdout).includes('not-the-password'));
      assert.doesNotMatch(wrong.stderr, /Connection is closed/);

      const none = await runCli(['status'], { env: { ...env, MARSIGN_REDIS_URL: url('') }, cwd });
      assert.equal(none.code, 2, none.stderr);
      assert.match(
        errorLine(none.stderr),
        /^marsign: REDIS_AUTH_FAILED: .*authentication failed: the server requires a password/,
      );

      // Through the config's passwordEnv, as an operator sets it up; the right password works.
      const conf = join(cwd, 'marsign.config.json');
      writeFileSync(
        conf,
        JSON.stringify({ redis: { url: url(''), passwordEnv: 'TEST_REDIS_PW' }, profiles: {} }),
      );
      const bad = await runCli(['status', '-c', conf], { env: { ...env, TEST_REDIS_PW: 'nope-nope' }, cwd });
      assert.equal(bad.code, 2);
      assert.match(errorLine(bad.stderr), /^marsign: REDIS_AUTH_FAILED: .*authentication failed/);
      assert.ok(!bad.stderr.includes('nope-nope'));
      // The long-running commands, which wait through a Redis that is down, fail at once on a bad password.
      for (const cmd of ['worker', 'serve']) {
        const r = await runCli([cmd, '-c', conf], {
          env: { ...env, TEST_REDIS_PW: 'nope-nope' },
          cwd,
          timeoutMs: 60_000,
        });
        assert.equal(r.code, 2, `${cmd}: ${r.stderr}`);
        assert.match(errorLine(r.stderr), /^marsign: REDIS_AUTH_FAILED: .*authentication failed/, cmd);
        assert.ok(!r.stderr.includes('nope-nope'));
      }
      const good = await runCli(['status', '-c', conf, '--json'], {
        env: { ...env, TEST_REDIS_PW: password },
        cwd,
      });
      assert.equal(good.code, 0, good.stderr);
    },
  );
}

test('a garbage timestamp reply during sign-locale: exit 2 (not 1), TSA_BAD_REPLY naming the URL', async () => {
  let tsa: TestTsa | undefined;
  try {
    tsa = await startTsa({ dir: tsaDir, mode: 'garbage' });
    const doc = JSON.parse(readFileSync(CONFIG_PATH, 'utf8')) as {
      profiles: { dev: { authenticode: Record<string, unknown>; mar: { keys: string[] } } };
    };
    const a = doc.profiles.dev.authenticode;
    a.certChain = join(KEYS, 'codesign.chain.pem');
    a.key = join(KEYS, 'codesign.key.pem');
    a.timestamp = { urls: [tsa.url], backoffMs: 1 };
    doc.profiles.dev.mar.keys = [join(KEYS, 'mar.key.pem')];
    const tsCfg = join(dir, 'tsa.config.json');
    writeFileSync(tsCfg, JSON.stringify(doc));
    const out = join(dir, 'ts.mar');
    const r = await runCli(['sign-locale', fixtureMar('fr'), '-o', out, '-c', tsCfg, '-t', '2'], { env });
    assert.equal(r.code, 2, r.stderr);
    const line = errorLine(r.stderr);
    assert.match(line, /^marsign: TSA_BAD_REPLY: /);
    assert.ok(line.includes(tsa.url), line);
    noTempNames(line);
    assert.ok(!existsSync(out));
  } finally {
    await tsa?.stop();
  }
});
