import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { before, test } from 'node:test';
import {
  cacheSettings,
  loadConfig,
  loadProfile,
  resolveSecret,
  validateConfig,
} from '../../src/config/index.js';
import { ConfigError } from '../../src/errors.js';
import { generateDevKeys, type DevKeys } from '../../src/keys/index.js';
import { runCli, tempDir } from '../helpers/env.js';

const PASS = 'Pr0file-Passphrase-NEVER-in-output';
const dir = tempDir('marsign-config-');
let dev: DevKeys;
let otherKey: string;

function writeConfig(name: string, cfg: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, typeof cfg === 'string' ? cfg : JSON.stringify(cfg, null, 2));
  return p;
}

const isConfigError =
  (code: string, ...mustInclude: string[]) =>
  (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const s of mustInclude) assert.ok(e.message.includes(s), `"${e.message}" should name ${s}`);
    assert.ok(!e.message.includes(PASS), 'message must not contain the passphrase');
    return true;
  };

before(async () => {
  dev = await generateDevKeys(join(dir, 'dev'));
  // An encrypted copy of the code-signing key, and an unrelated key for mismatch tests.
  execFileSync('openssl', [
    'pkcs8',
    '-topk8',
    '-in',
    dev.codeSigningKey,
    '-out',
    join(dir, 'cs.enc.pem'),
    '-passout',
    `pass:${PASS}`,
  ]);
  writeFileSync(join(dir, 'pass.txt'), PASS + '\n');
  otherKey = join(dir, 'other.key.pem');
  writeFileSync(
    otherKey,
    generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
  );
});

const profileWith = (authenticode: Record<string, unknown>) => ({
  profiles: { p: { authenticode: { certChain: dev.codeSigningChain, ...authenticode } } },
});

test('the dev config loads; profile has keys, chain, defaults, fingerprint; sha256 is of the file bytes', async () => {
  const c = await loadConfig(dev.config);
  assert.equal(c.path, dev.config);
  assert.match(c.sha256, /^[0-9a-f]{64}$/);
  const expected = execFileSync('sha256sum', [dev.config]).toString().split(' ')[0];
  assert.equal(c.sha256, expected);
  const p = await loadProfile(c, 'dev');
  assert.equal(p.authenticode?.digest, 'sha256');
  assert.equal(p.authenticode?.certChainDer.length, 2);
  assert.equal(p.mar?.keys.length, 1);
  assert.equal(p.mar?.algorithm, 'sha384');
  assert.deepEqual(p.policy.include, ['**/*.exe', '**/*.dll', '*.exe', '*.dll']);
  assert.match(p.fingerprint, /^[0-9a-f]{64}$/);
  assert.equal((await loadProfile(c, 'dev')).fingerprint, p.fingerprint, 'stable across loads');
  assert.deepEqual(p.limits, { maxEntrySize: 2 ** 30, maxCompressionRatio: 1000 });
});

test('limits: a config sets the per-entry decoded cap and the ratio cap; they do not change the fingerprint', async () => {
  const raw = JSON.parse(readFileSync(dev.config, 'utf8')) as Record<string, unknown>;
  const base = await loadProfile(await loadConfig(dev.config), 'dev');
  const limits = { maxEntrySize: 64 * 2 ** 20, maxCompressionRatio: 50 };
  const p = await loadProfile(await loadConfig(writeConfig('dev/limits.json', { ...raw, limits })), 'dev');
  assert.deepEqual(p.limits, limits);
  assert.equal(p.fingerprint, base.fingerprint);
  const one = { maxCompressionRatio: 20_000 };
  const q = await loadProfile(
    await loadConfig(writeConfig('dev/limits1.json', { ...raw, limits: one })),
    'dev',
  );
  assert.deepEqual(q.limits, { maxEntrySize: 2 ** 30, maxCompressionRatio: 20_000 });
});

test('fingerprint changes with what changes signed bytes, not with policy', async () => {
  const base = { key: dev.codeSigningKey, digest: 'sha256' };
  const fp = async (a: Record<string, unknown>, policy?: unknown) => {
    const cfg = profileWith({ ...base, ...a }) as { profiles: { p: Record<string, unknown> } };
    if (policy) cfg.profiles.p.policy = policy;
    return (await loadProfile(await loadConfig(writeConfig('fp.json', cfg)), 'p')).fingerprint;
  };
  const a = await fp({});
  assert.notEqual(await fp({ digest: 'sha1' }), a);
  assert.notEqual(await fp({ programName: 'x' }), a);
  assert.notEqual(await fp({ signingTime: true }), a);
  assert.notEqual(await fp({ timestamp: { urls: ['http://127.0.0.1:1/tsa'] } }), a);
  assert.equal(await fp({}, { exclude: ['**/vendor.dll'] }), a);
});

test('discovery: --config, else $MARSIGN_CONFIG, else ./marsign.config.json; CONFIG_NOT_FOUND names the path', async () => {
  const envPath = writeConfig('from-env.json', { profiles: { e: { mar: { keys: [dev.marKey] } } } });
  const saved = process.env.MARSIGN_CONFIG;
  const cwd = process.cwd();
  try {
    process.env.MARSIGN_CONFIG = envPath;
    assert.equal((await loadConfig()).path, envPath);
    assert.equal((await loadConfig(dev.config)).path, dev.config, '--config wins');
    delete process.env.MARSIGN_CONFIG;
    process.chdir(dev.dir);
    assert.equal((await loadConfig()).path, dev.config);
    process.chdir(dir);
    await assert.rejects(loadConfig(), isConfigError('CONFIG_NOT_FOUND', join(dir, 'marsign.config.json')));
    await assert.rejects(
      loadConfig(join(dir, 'nope.json')),
      isConfigError('CONFIG_NOT_FOUND', 'nope.json', '--config'),
    );
  } finally {
    process.chdir(cwd);
    if (saved === undefined) delete process.env.MARSIGN_CONFIG;
    else process.env.MARSIGN_CONFIG = saved;
  }
});

test('invalid JSON gives a position, never the text around it', async () => {
  const p = writeConfig('bad.json', `{"profiles": {"p": {"passphrase": "${PASS}" }}`);
  await assert.rejects(loadConfig(p), isConfigError('CONFIG_INVALID', 'not valid JSON', 'line 1'));
});

test('validation names the field, one rule at a time', () => {
  const cases: [unknown, string][] = [
    [{}, 'profiles'],
    [{ profiles: null }, 'profiles'],
    [{ profiles: 'dev' }, 'profiles'],
    [[], 'must be an object'],
    [{ profiles: { p: {} } }, 'profiles.p'],
    [{ profiles: { 'bad name!': { mar: { keys: ['k'] } } } }, 'profiles.bad name!'],
    [{ profiles: { p: { mar: { keys: [] } } } }, 'profiles.p.mar.keys'],
    [{ profiles: { p: { mar: { keys: Array(9).fill('k') } } } }, 'profiles.p.mar.keys'],
    [{ profiles: { p: { mar: { keys: ['k'], algorithm: 'md5' } } } }, 'profiles.p.mar.algorithm'],
    [{ profiles: { p: { mar: { keys: [3] } } } }, 'profiles.p.mar.keys[0]'],
    [
      { profiles: { p: { mar: { keys: ['k'], passphraseEnv: 'A', passphraseFile: 'f' } } } },
      'profiles.p.mar.passphraseEnv',
    ],
    [
      { profiles: { p: { mar: { keys: ['k'], passphraseEnv: 'has space' } } } },
      'profiles.p.mar.passphraseEnv',
    ],
    [{ profiles: { p: { authenticode: { key: 'k' } } } }, 'profiles.p.authenticode.certChain'],
    [{ profiles: { p: { authenticode: { certChain: 'c' } } } }, 'profiles.p.authenticode.key'],
    [{ profiles: { p: { authenticode: { pkcs12: 'x', key: 'k' } } } }, 'profiles.p.authenticode.pkcs12'],
    [
      { profiles: { p: { authenticode: { certChain: 'c', key: 'k', digest: 'md5' } } } },
      'profiles.p.authenticode.digest',
    ],
    [
      { profiles: { p: { authenticode: { certChain: 'c', key: 'k', programUrl: 'ftp://x' } } } },
      'profiles.p.authenticode.programUrl',
    ],
    [
      { profiles: { p: { authenticode: { certChain: 'c', key: 'k', timestamp: { urls: [] } } } } },
      'profiles.p.authenticode.timestamp.urls',
    ],
    [
      {
        profiles: {
          p: { authenticode: { certChain: 'c', key: 'k', timestamp: { urls: ['http://t'], retries: 0 } } },
        },
      },
      'profiles.p.authenticode.timestamp.retries',
    ],
    [
      { profiles: { p: { mar: { keys: ['k'] }, policy: { onInvalid: 'ignore' } } } },
      'profiles.p.policy.onInvalid',
    ],
    [
      { profiles: { p: { mar: { keys: ['k'] }, policy: { verifyPassthrough: 'no' } } } },
      'profiles.p.policy.verifyPassthrough',
    ],
    [{ profiles: {}, server: { port: 70000 } }, 'server.port'],
    [{ profiles: {}, redis: { url: 'redis://user:pw@host:6379' } }, 'redis.url'],
    [{ profiles: {}, cache: { hmacSecretEnv: 'A', hmacSecretFile: 'f' } }, 'cache.hmacSecretEnv'],
    [{ profiles: {}, limits: [] }, 'limits'],
    [{ profiles: {}, limits: { maxRatio: 10 } }, 'limits.maxRatio'],
    [{ profiles: {}, limits: { maxEntrySize: 1000 } }, 'limits.maxEntrySize'],
    [{ profiles: {}, limits: { maxEntrySize: 2 ** 31 + 1 } }, 'limits.maxEntrySize'],
    [{ profiles: {}, limits: { maxCompressionRatio: 1.5 } }, 'limits.maxCompressionRatio'],
    [{ profiles: {}, limits: { maxCompressionRatio: 5 } }, 'limits.maxCompressionRatio'],
  ];
  for (const [cfg, field] of cases) {
    assert.throws(
      () => validateConfig(cfg, 'cfg.json'),
      isConfigError('CONFIG_INVALID', field),
      JSON.stringify(cfg),
    );
  }
});

test('server.clients: strict, every rule names the client, no token value is ever echoed', () => {
  const HASH = 'ab'.repeat(32);
  const prof = { p: { mar: { keys: ['k'] } }, q: { mar: { keys: ['k'] } } };
  const cfg = (clients: unknown, server: Record<string, unknown> = {}) => ({
    profiles: prof,
    server: { ...server, clients },
  });
  const ok = { tokenEnv: 'A_TOKEN', scopes: ['submit', 'read:own'], profiles: ['p'] };
  validateConfig(cfg({ auto: ok, ops: { tokenSha256: HASH, scopes: ['read:all'] } }), 'cfg.json');
  const cases: [unknown, string, string][] = [
    [cfg({}), 'server.clients', 'at least one client'],
    [cfg([]), 'server.clients', 'must be an object'],
    [cfg({ 'bad.name': ok }), 'server.clients.bad.name', 'must be named'],
    [cfg({ 'cli:x': ok }), 'server.clients.cli:x', 'must be named'],
    [cfg({ auto: { ...ok, token: PASS } }), 'server.clients.auto.token', 'not a known field'],
    [cfg({ auto: { scopes: ['read:all'] } }), 'server.clients.auto', 'needs its token'],
    [cfg({ auto: { ...ok, tokenFile: 'f' } }), 'server.clients.auto.tokenEnv', 'exclusive'],
    [
      cfg({ auto: { ...ok, tokenEnv: undefined, tokenSha256: PASS } }),
      'server.clients.auto.tokenSha256',
      '64 hex',
    ],
    [cfg({ auto: { ...ok, scopes: [] } }), 'server.clients.auto.scopes', 'at least 1'],
    [cfg({ auto: { tokenEnv: 'A', profiles: ['p'] } }), 'server.clients.auto.scopes', 'is required'],
    [cfg({ auto: { ...ok, scopes: ['submit', 'write'] } }), 'server.clients.auto.scopes[1]', '"write"'],
    [cfg({ auto: { ...ok, profiles: [] } }), 'server.clients.auto.profiles', 'at least 1'],
    [
      cfg({ auto: { ...ok, profiles: ['p', 'nightly'] } }),
      'server.clients.auto.profiles[1]',
      'names no profile',
    ],
    [cfg({ auto: { ...ok, profiles: undefined } }), 'server.clients.auto.profiles', 'required with "submit"'],
    [cfg({ auto: { ...ok, scopes: ['admin'] } }), 'server.clients.auto.profiles', 'not allowed with "admin"'],
    [cfg({ auto: { ...ok, scopes: ['read:own'] } }), 'server.clients.auto.profiles', 'only meaningful'],
    [
      cfg({
        a: { tokenSha256: HASH, scopes: ['admin'] },
        b: { tokenSha256: HASH.toUpperCase(), scopes: ['read:all'] },
      }),
      'server.clients.b.tokenSha256',
      'server.clients.a',
    ],
    [
      cfg({ a: ok, b: { ...ok, scopes: ['submit'] } }),
      'server.clients.b.tokenEnv',
      'every client needs its own token',
    ],
    [cfg({ a: ok }, { tokenEnv: 'OLD' }), 'server.clients', 'exclusive'],
    [
      cfg({ a: ok }, { sessionSecretEnv: 'S', sessionSecretFile: 'f' }),
      'server.sessionSecretEnv',
      'exclusive',
    ],
  ];
  for (const [c, field, rule] of cases) {
    assert.throws(
      () => validateConfig(c, 'cfg.json'),
      (e: unknown) => {
        isConfigError('CONFIG_INVALID', field, rule)(e);
        assert.ok(!(e as Error).message.includes(HASH), 'message must not contain a token hash');
        return true;
      },
      JSON.stringify(c),
    );
  }
});

test('an unknown field (e.g. an inline passphrase) is named, its value is not', () => {
  const cfg = { profiles: { p: { mar: { keys: ['k'], passphrase: PASS } } } };
  assert.throws(
    () => validateConfig(cfg, 'cfg.json'),
    isConfigError('CONFIG_INVALID', 'profiles.p.mar.passphrase', 'not a known field'),
  );
});

test('a referenced file that does not exist fails at load time, naming the field', async () => {
  const p = writeConfig('missing.json', {
    profiles: { p: { mar: { keys: [dev.marKey, join(dir, 'gone.pem')] } } },
  });
  await assert.rejects(
    loadConfig(p),
    isConfigError('CONFIG_FILE_MISSING', 'profiles.p.mar.keys[1]', 'gone.pem'),
  );
});

test('PROFILE_NOT_FOUND lists the profiles', async () => {
  await assert.rejects(
    loadProfile(await loadConfig(dev.config), 'prod'),
    isConfigError('PROFILE_NOT_FOUND', '"prod"', 'dev'),
  );
  await assert.rejects(
    loadProfile(await loadConfig(dev.config), 'constructor'),
    isConfigError('PROFILE_NOT_FOUND'),
  );
});

test('passphrase from env or file opens an encrypted key', async () => {
  process.env.MARSIGN_TEST_PASS = PASS;
  try {
    for (const a of [{ passphraseEnv: 'MARSIGN_TEST_PASS' }, { passphraseFile: 'pass.txt' }]) {
      const c = await loadConfig(writeConfig('enc.json', profileWith({ key: 'cs.enc.pem', ...a })));
      const p = await loadProfile(c, 'p');
      assert.equal(p.authenticode?.key.bits, 2048);
      const shown = inspect(p, { depth: 20 }) + JSON.stringify(p);
      assert.ok(!shown.includes(PASS));
      assert.ok(!shown.includes(readFileSync(dev.codeSigningKey, 'utf8').split('\n')[3]!));
    }
  } finally {
    delete process.env.MARSIGN_TEST_PASS;
  }
});

test('wrong passphrase: KEY_PASSPHRASE_WRONG naming profile and field, never the passphrase', async () => {
  process.env.MARSIGN_TEST_PASS = PASS.toUpperCase();
  try {
    const c = await loadConfig(
      writeConfig('wrong.json', profileWith({ key: 'cs.enc.pem', passphraseEnv: 'MARSIGN_TEST_PASS' })),
    );
    await assert.rejects(
      loadProfile(c, 'p'),
      isConfigError('KEY_PASSPHRASE_WRONG', 'profile "p"', 'authenticode.key'),
    );
  } finally {
    delete process.env.MARSIGN_TEST_PASS;
  }
  const c = await loadConfig(writeConfig('nopass.json', profileWith({ key: 'cs.enc.pem' })));
  await assert.rejects(
    loadProfile(c, 'p'),
    isConfigError('KEY_PASSPHRASE_REQUIRED', 'profile "p"', 'authenticode.key'),
  );
});

test('missing env var: SECRET_MISSING names the variable', async () => {
  delete process.env.MARSIGN_TEST_UNSET;
  const c = await loadConfig(
    writeConfig('unset.json', profileWith({ key: 'cs.enc.pem', passphraseEnv: 'MARSIGN_TEST_UNSET' })),
  );
  await assert.rejects(
    loadProfile(c, 'p'),
    isConfigError('SECRET_MISSING', 'MARSIGN_TEST_UNSET', 'profile "p"'),
  );
  await assert.rejects(
    resolveSecret({ file: 'no-such-file' }, 'x', dir),
    isConfigError('SECRET_MISSING', 'no-such-file'),
  );
  assert.equal(await resolveSecret({}, 'x'), undefined);
  assert.equal(await resolveSecret({ file: 'pass.txt' }, 'x', dir), PASS, 'trailing newline dropped');
});

test('key and certificate that do not match: KEY_CERT_MISMATCH naming profile and field', async () => {
  const c = await loadConfig(writeConfig('mismatch.json', profileWith({ key: otherKey })));
  await assert.rejects(
    loadProfile(c, 'p'),
    isConfigError('KEY_CERT_MISMATCH', 'profile "p"', 'authenticode.key'),
  );
});

test('a signer certificate without the codeSigning EKU is refused', async () => {
  const c = await loadConfig(
    writeConfig('tsa-as-cs.json', {
      profiles: { p: { authenticode: { certChain: dev.tsaCert, key: dev.tsaKey } } },
    }),
  );
  await assert.rejects(loadProfile(c, 'p'), isConfigError('CERT_NOT_CODE_SIGNING', 'profile "p"'));
});

test('PKCS#12 profile with passphrase file; wrong passphrase names the field', async () => {
  const p12 = join(dir, 'cs.p12');
  execFileSync('openssl', [
    'pkcs12',
    '-export',
    '-inkey',
    dev.codeSigningKey,
    '-in',
    dev.codeSigningChain,
    '-passout',
    `pass:${PASS}`,
    '-out',
    p12,
  ]);
  const ok = await loadProfile(
    await loadConfig(
      writeConfig('p12.json', {
        profiles: { p: { authenticode: { pkcs12: 'cs.p12', passphraseFile: 'pass.txt' } } },
      }),
    ),
    'p',
  );
  assert.equal(ok.authenticode?.certChainDer.length, 2);
  writeFileSync(join(dir, 'wrongpass.txt'), 'nope');
  const bad = await loadConfig(
    writeConfig('p12bad.json', {
      profiles: { p: { authenticode: { pkcs12: 'cs.p12', passphraseFile: 'wrongpass.txt' } } },
    }),
  );
  await assert.rejects(
    loadProfile(bad, 'p'),
    isConfigError('KEY_PASSPHRASE_WRONG', 'profile "p"', 'authenticode.pkcs12'),
  );
});

test('MAR keys: several in order, encrypted with the shared passphrase', async () => {
  execFileSync('openssl', [
    'pkcs8',
    '-topk8',
    '-in',
    dev.marKey,
    '-out',
    join(dir, 'mar.enc.pem'),
    '-passout',
    `pass:${PASS}`,
  ]);
  const c = await loadConfig(
    writeConfig('mar.json', {
      profiles: {
        m: { mar: { keys: ['mar.enc.pem', otherKey], passphraseFile: 'pass.txt', algorithm: 'sha1' } },
      },
    }),
  );
  const p = await loadProfile(c, 'm');
  assert.equal(p.mar?.algorithm, 'sha1');
  assert.equal(p.mar?.keys.length, 2);
  assert.notEqual(p.mar?.keys[0]?.id, p.mar?.keys[1]?.id);
  assert.equal(p.authenticode, undefined);
});

test('cacheSettings: config dir wins, then $MARSIGN_CACHE_DIR; generated secret is 0600 and stable; env secret is hex', async () => {
  const cacheDir = join(dir, 'cache-a');
  const c = await loadConfig(writeConfig('cache.json', { cache: { dir: 'cache-a' }, profiles: {} }));
  const s1 = await cacheSettings(c);
  assert.equal(s1.dir, cacheDir);
  assert.equal(s1.hmacSecret.length, 32);
  assert.equal(statSync(join(cacheDir, '.hmac-secret')).mode & 0o777, 0o600);
  assert.deepEqual((await cacheSettings(c)).hmacSecret, s1.hmacSecret);
  const saved = process.env.MARSIGN_CACHE_DIR;
  process.env.MARSIGN_CACHE_DIR = join(dir, 'cache-env');
  try {
    assert.equal((await cacheSettings()).dir, join(dir, 'cache-env'));
    process.env.MARSIGN_TEST_HMAC = 'ab'.repeat(20);
    const e = await loadConfig(
      writeConfig('cache-env.json', { cache: { hmacSecretEnv: 'MARSIGN_TEST_HMAC' }, profiles: {} }),
    );
    assert.deepEqual(Buffer.from((await cacheSettings(e)).hmacSecret), Buffer.alloc(20, 0xab));
    process.env.MARSIGN_TEST_HMAC = 'abcd';
    await assert.rejects(cacheSettings(e), isConfigError('CACHE_SECRET_TOO_SHORT', 'MARSIGN_TEST_HMAC'));
    delete process.env.MARSIGN_TEST_HMAC;
    await assert.rejects(cacheSettings(e), isConfigError('SECRET_MISSING', 'MARSIGN_TEST_HMAC'));
  } finally {
    if (saved === undefined) delete process.env.MARSIGN_CACHE_DIR;
    else process.env.MARSIGN_CACHE_DIR = saved;
  }
});

test('CLI: no error path prints the passphrase (stdout, stderr, --json)', async () => {
  const cfgs = {
    wrong: profileWith({ key: 'cs.enc.pem', passphraseEnv: 'MARSIGN_TEST_PASS' }),
    mismatch: profileWith({ key: otherKey, passphraseEnv: 'MARSIGN_TEST_PASS' }),
    unknownField: { profiles: { p: { mar: { keys: [dev.marKey], passphrase: PASS } } } },
  };
  const exe = join(dir, 'in.exe');
  mkdirSync(join(dir, 'out'), { recursive: true });
  writeFileSync(exe, 'MZ not really a PE');
  for (const [name, cfg] of Object.entries(cfgs)) {
    const p = writeConfig(`cli-${name}.json`, cfg);
    for (const extra of [[], ['--json']]) {
      const r = await runCli(
        ['sign-pe', exe, '-o', join(dir, 'out', 'x.exe'), '--profile', 'p', '--config', p, ...extra],
        {
          env: { MARSIGN_TEST_PASS: name === 'wrong' ? PASS + 'x' : PASS, MARSIGN_DEBUG: '1' },
        },
      );
      assert.equal(r.code, 2, `${name}: ${r.stderr}`);
      assert.match(r.stderr, /marsign: (KEY_PASSPHRASE_WRONG|KEY_CERT_MISMATCH|CONFIG_INVALID):/);
      assert.match(r.stderr, /sha256|CONFIG_INVALID/);
      assert.ok(!(r.stdout + r.stderr).includes(PASS), `${name}: passphrase leaked`);
    }
  }
});
