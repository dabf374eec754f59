/**
 * The PKCS#11 backend against a real SoftHSM2 token (test/helpers/softhsm.ts): the same key in the token
 * and in a file signs byte-identical PEs and MARs, the token's chain and key id equal the files', errors
 * are typed (config vs retryable) and never carry the PIN, lost sessions are re-established, and two
 * worker threads sign concurrently with the main thread in one process.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  createHash,
  createPublicKey,
  randomBytes,
  verify as cryptoVerify,
  X509Certificate,
} from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { Worker } from 'node:worker_threads';
import { before, describe, test } from 'node:test';
import { loadConfig, loadProfile, probeProfileKeys } from '../../src/config/index.js';
import type { SigningProfile } from '../../src/config/types.js';
import { ConfigError, isRetryable, toPlainError } from '../../src/errors.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import { generateDevKeys, type DevKeys } from '../../src/keys/dev.js';
import { threadSessionCount } from '../../src/keys/pkcs11.js';
import { signPe } from '../../src/signing/authenticode.js';
import { signMarFile } from '../../src/signing/mar-signer.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { tempDir } from '../helpers/env.js';
import { SOFTHSM_SKIP, SoftHsm } from '../helpers/softhsm.js';

const PIN = '482913-test-PIN';
const OTHER_PIN = '771155-other-PIN';
const TOKEN = 'marsign-release';

describe('PKCS#11 keys in SoftHSM', { skip: SOFTHSM_SKIP }, () => {
  const dir = tempDir('marsign-p11-');
  // Made here, not in before(): tempDir's cleanup hook must belong to this suite.
  const hsm = SOFTHSM_SKIP ? (undefined as never as SoftHsm) : new SoftHsm();
  let dev: DevKeys;
  let tokenCfg: string;
  let fileCfg: string;
  const cfgs: Record<string, string> = {};

  const writeConfig = (name: string, profiles: unknown, extra: Record<string, unknown> = {}): string => {
    const p = join(dir, `${name}.json`);
    writeFileSync(p, JSON.stringify({ pkcs11: { module: hsm.module }, ...extra, profiles }, null, 2));
    return p;
  };
  const uri = (object: string, token = TOKEN): string => `pkcs11:token=${token};object=${object}`;

  before(async () => {
    hsm.useInProcess();
    process.env.MARSIGN_TEST_PIN = PIN;
    process.env.MARSIGN_TEST_OTHER_PIN = OTHER_PIN;
    process.env.MARSIGN_TEST_WRONG_PIN = 'not-the-pin-9999';
    dev = await generateDevKeys(join(dir, 'dev'), { marKeyBits: 4096 });
    const der = (pemPath: string, name: string): string => {
      const p = join(dir, name);
      writeFileSync(p, new X509Certificate(readFileSync(pemPath)).raw);
      return p;
    };
    hsm.initToken(TOKEN, PIN);
    const t = { token: TOKEN, pin: PIN };
    hsm.importKey(dev.codeSigningKey, { ...t, label: 'codesign', id: '01' });
    hsm.importCert(der(dev.codeSigningCert, 'cs.der'), { ...t, label: 'codesign', id: '01' });
    hsm.importCert(der(dev.caCert, 'ca.der'), { ...t, label: 'ca', id: '02' });
    hsm.importKey(dev.marKey, { ...t, label: 'mar', id: '03' });
    // Keys marsign must refuse: PSS only, and EC.
    hsm.generate('rsa:2048', { ...t, label: 'pss-only', id: '04' }, [
      '--usage-sign',
      '--allowed-mechanisms',
      'RSA-PKCS-PSS,SHA256-RSA-PKCS-PSS',
    ]);
    hsm.generate('EC:prime256v1', { ...t, label: 'ec', id: '05' }, ['--usage-sign']);
    // A token of its own for the wrong-PIN case: login state is per process, and this process logs in
    // to TOKEN in other tests.
    hsm.initToken('pin-test', OTHER_PIN);
    hsm.importKey(dev.codeSigningKey, { token: 'pin-test', pin: OTHER_PIN, label: 'codesign', id: '01' });

    const auth = { digest: 'sha256', programName: 'marsign TEST-ONLY' };
    tokenCfg = writeConfig('token', {
      p: {
        authenticode: { ...auth, key: uri('codesign'), pinEnv: 'MARSIGN_TEST_PIN' },
        mar: { keys: [uri('mar')], pinEnv: 'MARSIGN_TEST_PIN', algorithm: 'sha384' },
      },
    });
    fileCfg = writeConfig('file', {
      p: {
        authenticode: { ...auth, key: dev.codeSigningKey, certChain: dev.codeSigningChain },
        mar: { keys: [dev.marKey], algorithm: 'sha384' },
      },
    });
    const a = (key: string, pinEnv = 'MARSIGN_TEST_PIN') => ({
      p: { authenticode: { key, pinEnv, certChain: dev.codeSigningChain } },
    });
    cfgs.wrongPin = writeConfig('wrong-pin', a(uri('codesign', 'pin-test'), 'MARSIGN_TEST_WRONG_PIN'));
    cfgs.noToken = writeConfig('no-token', a(uri('codesign', 'no-such-token')));
    cfgs.noKey = writeConfig('no-key', a(uri('no-such-key')));
    cfgs.pss = writeConfig('pss', a(uri('pss-only')));
    cfgs.ec = writeConfig('ec', a(uri('ec')));
    cfgs.noPin = writeConfig('no-pin', {
      p: { authenticode: { key: uri('codesign', 'pin-test'), certChain: dev.codeSigningChain } },
    });
  });

  const load = async (cfg: string): Promise<SigningProfile> => loadProfile(await loadConfig(cfg), 'p');

  test('a token key has the id, size and SPKI of the same key in a file; the chain comes from the token; fingerprints are equal', async () => {
    const [tok, file] = [await load(tokenCfg), await load(fileCfg)];
    assert.equal(tok.authenticode!.key.id, file.authenticode!.key.id);
    assert.equal(tok.authenticode!.key.bits, 2048);
    assert.equal(tok.mar!.keys[0]!.bits, 4096);
    assert.equal(tok.mar!.keys[0]!.id, file.mar!.keys[0]!.id);
    assert.deepEqual(
      tok.authenticode!.certChainDer.map((d) => Buffer.from(d).toString('hex')),
      file.authenticode!.certChainDer.map((d) => Buffer.from(d).toString('hex')),
      'token chain = codesign.chain.pem (signer, then CA)',
    );
    assert.equal(tok.fingerprint, file.fingerprint, 'the cache is shared between token and file keys');
  });

  test('byte-identical Authenticode PE from token and file keys; osslsigncode verifies it', async () => {
    const [tok, file] = [await load(tokenCfg), await load(fileCfg)];
    const pe = buildPe({ arch: 'x64', kind: 'exe', name: 'p11-test' });
    const a = await signPe(pe, tok.authenticode!);
    const b = await signPe(pe, file.authenticode!);
    assert.ok(Buffer.from(a).equals(Buffer.from(b)), 'signed PEs differ');
    const out = join(dir, 'signed.exe');
    writeFileSync(out, a);
    const r = spawnSync('osslsigncode', ['verify', '-CAfile', dev.caCert, '-in', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  test('byte-identical MAR signature (RSA-4096, sha384) from token and file keys; verifyMar and openssl agree', async () => {
    const [tok, file] = [await load(tokenCfg), await load(fileCfg)];
    const input = join(dir, 'in.mar');
    const { MarWriter } = await import('../../src/mar/writer.js');
    const w = await MarWriter.create(input);
    await w.addEntry('a.txt', 0o644, randomBytes(4096));
    await w.finish();
    await w.commit();
    await signMarFile(input, join(dir, 'tok.mar'), tok.mar!);
    await signMarFile(input, join(dir, 'file.mar'), file.mar!);
    const [x, y] = [readFileSync(join(dir, 'tok.mar')), readFileSync(join(dir, 'file.mar'))];
    assert.ok(x.equals(y), 'MARs differ');
    const v = await verifyMar(join(dir, 'tok.mar'), [dev.marCert]);
    assert.ok(v.valid, v.problems.join('; '));
  });

  test('errors: wrong PIN, missing token, missing key, PSS-only and EC keys, no PIN — typed, not retryable, no PIN in them', async () => {
    const cases: [string, string][] = [
      ['wrongPin', 'PKCS11_PIN_WRONG'],
      ['noToken', 'PKCS11_TOKEN_NOT_FOUND'],
      ['noKey', 'PKCS11_KEY_NOT_FOUND'],
      ['pss', 'PKCS11_MECHANISM_UNSUPPORTED'],
      ['ec', 'PKCS11_MECHANISM_UNSUPPORTED'],
    ];
    for (const [name, code] of cases) {
      await assert.rejects(load(cfgs[name]!), (e: unknown) => {
        assert.ok(e instanceof ConfigError, `${name}: ${String(e)}`);
        assert.equal(e.code, code, e.message);
        assert.equal(isRetryable(e), false, `${name} must not be retried`);
        assert.equal(isRetryable(toPlainError(e)), false);
        assert.match(e.message, /^profile "p": authenticode\.key: pkcs11:token=/);
        const all = `${e.message} ${JSON.stringify(toPlainError(e))} ${inspect(e)}`;
        for (const pin of [PIN, OTHER_PIN, 'not-the-pin-9999'])
          assert.ok(!all.includes(pin), `${name}: PIN leaked`);
        return true;
      });
    }
  });

  test('a profile of a login-required token with no PIN configured is PKCS11_PIN_MISSING', async () => {
    // pin-test is logged in by now only if the wrong-PIN case had succeeded; it did not.
    await assert.rejects(load(cfgs.noPin!), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.code, 'PKCS11_PIN_MISSING', e.message);
      return true;
    });
  });

  test('config validation: pin-value, bad URIs, pin-source + pinEnv, stray pinEnv, missing module — named errors', async () => {
    const bad = async (profiles: unknown, code: string, extra: Record<string, unknown> = {}, want = '') => {
      const p = join(dir, `bad-${code}-${Math.random().toString(36).slice(2)}.json`);
      writeFileSync(p, JSON.stringify({ ...extra, profiles }));
      await assert.rejects(loadConfig(p), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.equal(e.code, code, e.message);
        assert.ok(e.message.includes(want), `${e.message} should include ${want}`);
        assert.ok(!e.message.includes('123456'), 'PIN in message');
        return true;
      });
    };
    const mod = { pkcs11: { module: hsm.module } };
    await bad(
      { p: { mar: { keys: [`${uri('mar')}?pin-value=123456`] } } },
      'PKCS11_URI_PIN_INLINE',
      mod,
      'profiles.p.mar.keys[0]',
    );
    await bad({ p: { mar: { keys: ['pkcs11:tokn=x'] } } }, 'PKCS11_URI_INVALID', mod, 'tokn');
    await bad(
      { p: { mar: { keys: [`${uri('mar')}?pin-source=pin.txt`], pinEnv: 'X' } } },
      'CONFIG_INVALID',
      mod,
      'pin-source',
    );
    await bad(
      { p: { mar: { keys: [dev.marKey], pinEnv: 'X' } } },
      'CONFIG_INVALID',
      mod,
      'profiles.p.mar.pinEnv',
    );
    await bad(
      { p: { mar: { keys: [uri('mar')], passphraseEnv: 'X' } } },
      'CONFIG_INVALID',
      mod,
      'passphraseEnv',
    );
    await bad({ p: { mar: { keys: [uri('mar')] } } }, 'PKCS11_MODULE_MISSING', {}, 'pkcs11');
    await bad(
      { p: { mar: { keys: [uri('mar')] } } },
      'CONFIG_FILE_MISSING',
      { pkcs11: { module: '/nope/lib.so' } },
      '/nope/lib.so',
    );
    await bad(
      { p: { mar: { keys: [uri('mar')] } } },
      'CONFIG_INVALID',
      { pkcs11: { module: 'x', pin: '123456' } },
      'pkcs11.pin',
    );
    // $MARSIGN_PKCS11_MODULE overrides the config's module.
    process.env.MARSIGN_PKCS11_MODULE = '/nope/from-env.so';
    try {
      await bad({ p: { mar: { keys: [uri('mar')] } } }, 'CONFIG_FILE_MISSING', mod, 'from-env.so');
    } finally {
      delete process.env.MARSIGN_PKCS11_MODULE;
    }
  });

  test('pin-source in the URI works instead of pinEnv', async () => {
    writeFileSync(join(dir, 'pin.txt'), PIN + '\n', { mode: 0o600 });
    const p = writeConfig('pin-source', {
      p: { mar: { keys: [`${uri('mar')}?pin-source=pin.txt`] } },
    });
    const prof = await load(p);
    assert.equal(prof.mar!.keys[0]!.bits, 4096);
  });

  test('the PIN never shows in inspect or JSON of a loaded profile', async () => {
    const tok = await load(tokenCfg);
    const text = inspect(tok, { depth: 10, showHidden: true }) + JSON.stringify(tok);
    assert.ok(!text.includes(PIN));
    assert.match(JSON.stringify(tok.authenticode!.key), /"backend":"pkcs11"/);
  });

  test('a lost session (all sessions closed by the token) is reopened and logged in again', async () => {
    const tok = await load(tokenCfg);
    const key = tok.mar!.keys[0]!;
    const d = createHash('sha384').update('before').digest();
    await key.signDigest('sha384', d);
    // Another handle on the same (process-wide) Cryptoki instance closes every session of the slot: the
    // token logs us out and our session handle becomes invalid.
    const pk = createRequire(import.meta.url)('pkcs11js') as {
      PKCS11: new () => {
        load(p: string): void;
        C_Initialize(o?: object): void;
        C_GetSlotList(b: boolean): Buffer[];
        C_GetTokenInfo(s: Buffer): { label: string };
        C_CloseAllSessions(s: Buffer): void;
      };
    };
    const lib = new pk.PKCS11();
    lib.load(hsm.module);
    try {
      lib.C_Initialize();
    } catch {
      // already initialised in this process
    }
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === TOKEN)!;
    lib.C_CloseAllSessions(slot);
    const data = Buffer.from('after the session was lost');
    const sig = await key.signDigest('sha384', createHash('sha384').update(data).digest());
    const pub = createPublicKey({ key: Buffer.from(key.publicKeyDer), format: 'der', type: 'spki' });
    assert.ok(cryptoVerify('sha384', data, pub, sig));
    const probe = await probeProfileKeys(await loadConfig(tokenCfg), 'p');
    assert.deepEqual(
      probe.map((x) => [x.field, x.reachable, x.loggedIn, x.keyPresent]),
      [
        ['authenticode.key', true, true, true],
        ['mar.keys[0]', true, true, true],
      ],
    );
  });

  test('health probe of a missing key: reachable, logged in, key absent, typed error', async () => {
    const probe = await probeProfileKeys(await loadConfig(cfgs.noKey!), 'p');
    assert.equal(probe.length, 1);
    assert.equal(probe[0]!.reachable, true);
    assert.equal(probe[0]!.keyPresent, false);
    assert.equal(probe[0]!.error?.code, 'PKCS11_KEY_NOT_FOUND');
    const none = await probeProfileKeys(await loadConfig(cfgs.noToken!), 'p');
    assert.equal(none[0]!.reachable, false);
    assert.equal(none[0]!.error?.code, 'PKCS11_TOKEN_NOT_FOUND');
  });

  test('two worker threads and the main thread sign concurrently with the token key, each on its own session', async () => {
    const tok = await load(tokenCfg);
    const key = tok.authenticode!.key;
    const pub = createPublicKey({ key: Buffer.from(key.publicKeyDer), format: 'der', type: 'spki' });
    const N = 40;
    const msgs = (t: string) => Array.from({ length: N }, (_, i) => Buffer.from(`${t}-${i}`));
    const workers = ['w1', 'w2'].map((t) => {
      const m = msgs(t);
      const w = new Worker(new URL('./pkcs11-thread.mjs', import.meta.url), {
        workerData: {
          configPath: tokenCfg,
          profile: 'p',
          digests: m.map((x) => createHash('sha256').update(x).digest()),
        },
      });
      return new Promise<{ m: Buffer[]; sigs: Uint8Array[]; sessions: { thread: number; sessions: number } }>(
        (res, rej) => {
          w.once('message', (v: { sigs: Uint8Array[]; sessions: { thread: number; sessions: number } }) =>
            res({ m, ...v }),
          );
          w.once('error', rej);
        },
      );
    });
    const mine = msgs('main');
    const mainSigs = Promise.all(
      mine.map((x) => key.signDigest('sha256', createHash('sha256').update(x).digest())),
    );
    const [[r1, r2], rm] = await Promise.all([Promise.all(workers), mainSigs]);
    for (const r of [r1!, r2!]) {
      r.m.forEach((x, i) =>
        assert.ok(cryptoVerify('sha256', x, pub, r.sigs[i]!), `thread ${r.sessions.thread} sig ${i}`),
      );
      assert.equal(r.sessions.sessions, 1, 'one session per thread');
    }
    mine.forEach((x, i) => assert.ok(cryptoVerify('sha256', x, pub, rm[i]!), `main sig ${i}`));
    assert.notEqual(r1!.sessions.thread, r2!.sessions.thread);
    assert.equal(threadSessionCount().sessions >= 1, true);
  });
});
