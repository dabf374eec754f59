/**
 * The CLI end to end with keys in a SoftHSM2 token: `sign-pe`, `sign-mar` and `sign-release` of the
 * sample release with a config whose keys are `pkcs11:` URIs give byte-identical outputs to the same
 * keys as files (fixtures/release/keys), verified by osslsigncode and the MAR checks; token errors exit 2
 * with their code, write nothing and never print the PIN.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { buildPe } from '../../src/formats/pe/synth.js';
import { runCli, tempDir } from '../helpers/env.js';
import { SOFTHSM_SKIP, SoftHsm } from '../helpers/softhsm.js';
import {
  checkSignedOutput,
  CONFIG_PATH,
  FIXTURE_SIGNED,
  fixtureMar,
  KEYS,
  LOCALES,
  RELEASE,
  osslsigncodeVerify,
} from '../pipeline/_support.js';

const PIN = '20260917-cli-PIN';
const TOKEN = 'marsign-release';

describe('CLI with PKCS#11 keys (SoftHSM)', { skip: SOFTHSM_SKIP }, () => {
  const dir = tempDir('marsign-cli-p11-');
  const hsm = SOFTHSM_SKIP ? (undefined as never as SoftHsm) : new SoftHsm();
  const tokenCfg = join(dir, 'marsign.config.json');
  const env = (extra: Record<string, string> = {}) => ({ ...hsm.env, MARSIGN_TEST_PIN: PIN, ...extra });

  before(() => {
    const der = (name: string): string => {
      const p = join(dir, `${name}.der`);
      writeFileSync(p, new X509Certificate(readFileSync(join(KEYS, `${name}.cert.pem`))).raw);
      return p;
    };
    const t = { token: TOKEN, pin: PIN };
    hsm.initToken(TOKEN, PIN);
    hsm.importKey(join(KEYS, 'codesign.key.pem'), { ...t, label: 'codesign', id: '01' });
    hsm.importCert(der('codesign'), { ...t, label: 'codesign', id: '01' });
    hsm.importCert(der('ca'), { ...t, label: 'ca', id: '02' });
    hsm.importKey(join(KEYS, 'mar.key.pem'), { ...t, label: 'mar', id: '03' });
    // The fixture's profile, with token keys (chain from the token) instead of files.
    const fixture = JSON.parse(readFileSync(CONFIG_PATH, 'utf8')) as {
      profiles: { dev: { authenticode: Record<string, unknown>; mar: Record<string, unknown> } };
    };
    const { certChain: _c, key: _k, ...auth } = fixture.profiles.dev.authenticode;
    writeFileSync(
      tokenCfg,
      JSON.stringify({
        pkcs11: { module: hsm.module },
        profiles: {
          dev: {
            authenticode: {
              ...auth,
              key: `pkcs11:token=${TOKEN};object=codesign`,
              pinEnv: 'MARSIGN_TEST_PIN',
            },
            mar: {
              ...fixture.profiles.dev.mar,
              keys: [`pkcs11:token=${TOKEN};object=mar`],
              pinEnv: 'MARSIGN_TEST_PIN',
            },
          },
        },
      }),
    );
  });

  test('sign-pe and sign-mar: token and file keys give byte-identical outputs', async () => {
    const pe = join(dir, 'in.exe');
    writeFileSync(pe, buildPe({ arch: 'x86', kind: 'exe', name: 'cli-p11' }));
    for (const [name, cfg] of [
      ['tok', tokenCfg],
      ['file', CONFIG_PATH],
    ] as const) {
      const r = await runCli(
        ['sign-pe', pe, '-o', join(dir, `${name}.exe`), '--profile', 'dev', '--config', cfg],
        {
          env: env(),
        },
      );
      assert.equal(r.code, 0, r.stderr);
      const m = await runCli(
        ['sign-mar', fixtureMar('de'), '-o', join(dir, `${name}.mar`), '--profile', 'dev', '--config', cfg],
        { env: env() },
      );
      assert.equal(m.code, 0, m.stderr);
      assert.ok(!(r.stdout + r.stderr + m.stdout + m.stderr).includes(PIN));
    }
    assert.ok(readFileSync(join(dir, 'tok.exe')).equals(readFileSync(join(dir, 'file.exe'))), 'PEs differ');
    assert.ok(readFileSync(join(dir, 'tok.mar')).equals(readFileSync(join(dir, 'file.mar'))), 'MARs differ');
    osslsigncodeVerify(readFileSync(join(dir, 'tok.exe')), dir, 'tok.exe');
    const v = await runCli(['verify', join(dir, 'tok.mar'), '--mar-cert', join(KEYS, 'mar.cert.pem')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });

  test('sign-release of the sample release with token keys = with file keys, byte for byte; outputs verify', async () => {
    const outs: Record<string, string> = {};
    for (const [name, cfg] of [
      ['tok', tokenCfg],
      ['file', CONFIG_PATH],
    ] as const) {
      outs[name] = join(dir, `release-${name}`);
      const r = await runCli(['sign-release', RELEASE, '-o', outs[name], '--config', cfg, '--json'], {
        env: env({ MARSIGN_CACHE_DIR: join(dir, `cache-${name}`) }),
        timeoutMs: 300_000,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(!(r.stdout + r.stderr).includes(PIN));
    }
    for (const l of LOCALES) {
      const t = join(outs.tok!, l, 'complete.mar');
      assert.ok(readFileSync(t).equals(readFileSync(join(outs.file!, l, 'complete.mar'))), `${l} differs`);
    }
    await checkSignedOutput(fixtureMar('de'), join(outs.tok!, 'de', 'complete.mar'), {
      signed: FIXTURE_SIGNED,
      dir,
    });
  });

  test('wrong PIN, missing token: exit 2 with the typed code, no output written, PIN never printed', async () => {
    const pe = join(dir, 'in2.exe');
    writeFileSync(pe, buildPe({ arch: 'x64', kind: 'dll', name: 'cli-p11-bad' }));
    const noToken = join(dir, 'no-token.json');
    writeFileSync(noToken, readFileSync(tokenCfg, 'utf8').replaceAll(`token=${TOKEN}`, 'token=absent'));
    const wrong = 'wrong-PIN-000111';
    const cases: [string, string[], Record<string, string>, string][] = [
      [
        'sign-pe wrong PIN',
        ['sign-pe', pe, '-o', join(dir, 'bad', 'x.exe')],
        { MARSIGN_TEST_PIN: wrong },
        'PKCS11_PIN_WRONG',
      ],
      [
        'sign-mar no token',
        ['sign-mar', fixtureMar('fr'), '-o', join(dir, 'bad', 'x.mar'), '--config', noToken],
        {},
        'PKCS11_TOKEN_NOT_FOUND',
      ],
      [
        'sign-release wrong PIN',
        ['sign-release', RELEASE, '-o', join(dir, 'bad', 'rel')],
        { MARSIGN_TEST_PIN: wrong },
        'PKCS11_PIN_WRONG',
      ],
    ];
    for (const [name, args, extra, code] of cases) {
      for (const json of [[], ['--json']]) {
        const withCfg = args.includes('--config') ? args : [...args, '--config', tokenCfg];
        const r = await runCli([...withCfg, '--profile', 'dev', ...json], {
          env: env({ ...extra, MARSIGN_CACHE_DIR: join(dir, 'cache-bad'), MARSIGN_DEBUG: '1' }),
        });
        assert.equal(r.code, 2, `${name}: ${r.stdout}${r.stderr}`);
        assert.match(
          r.stderr,
          new RegExp(
            `marsign: ${code}: profile "dev": (authenticode\\.key|mar\\.keys\\[0\\]): pkcs11:token=`,
          ),
        );
        for (const secret of [PIN, wrong])
          assert.ok(!(r.stdout + r.stderr).includes(secret), `${name}: PIN printed`);
      }
    }
    const bad = join(dir, 'bad');
    const left = existsSync(bad) ? readdirSync(bad, { recursive: true }) : [];
    assert.deepEqual(
      left.filter((f) => String(f).endsWith('.exe') || String(f).endsWith('.mar')),
      [],
      'no output written',
    );
  });

  test('keys dev --pkcs11: a token with the TEST-ONLY keys and a config that signs with it end to end', async () => {
    const out = join(dir, 'devkeys');
    const r = await runCli(['keys', 'dev', '--out', out, '--pkcs11', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as {
      config: string;
      caCert: string;
      pkcs11: { softhsmConf: string; pinFile: string; pinEnv: string; authenticodeKeyUri: string };
    };
    const pin = readFileSync(doc.pkcs11.pinFile, 'utf8').trim();
    assert.ok(pin.length >= 8);
    assert.ok(!(r.stdout + r.stderr).includes(pin), 'the PIN is not printed');
    assert.match(
      readFileSync(doc.config, 'utf8'),
      /"key": "pkcs11:token=marsign-dev-[0-9a-f]+;object=codesign"/,
    );
    const pe = join(dir, 'dev-in.exe');
    writeFileSync(pe, buildPe({ arch: 'x64', kind: 'exe', name: 'keys-dev-p11' }));
    const envs = { SOFTHSM2_CONF: doc.pkcs11.softhsmConf, [doc.pkcs11.pinEnv]: pin };
    for (const profile of ['dev', 'dev-files']) {
      const s = await runCli(
        ['sign-pe', pe, '-o', join(dir, `dev-${profile}.exe`), '--profile', profile, '--config', doc.config],
        { env: envs },
      );
      assert.equal(s.code, 0, s.stderr);
    }
    assert.ok(readFileSync(join(dir, 'dev-dev.exe')).equals(readFileSync(join(dir, 'dev-dev-files.exe'))));
    const v = await runCli(['verify', join(dir, 'dev-dev.exe'), '--ca', doc.caCert]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});
