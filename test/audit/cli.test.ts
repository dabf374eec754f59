/**
 * The audit trail end to end through the CLI: a real `sign-release` of the sample release writes a log
 * that verifies and holds one record per signing operation with the right fields (checked against the
 * locale manifests, the keys and the files); a re-run served from the output cache appends records
 * saying so; `audit find` answers for a signed entry and for one served from the cache; `audit verify`
 * exits 1 naming the line of a removed, edited, swapped or cut record; a log that cannot be written
 * stops a signing command before it signs; sign-pe (with a real timestamp authority) and sign-mar write
 * their records; no PIN ever reaches a record.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FoundRecord } from '../../src/audit/find.js';
import type { AuditRecord } from '../../src/audit/types.js';
import type { VerifyReport } from '../../src/audit/verify.js';
import { loadConfig, loadProfile } from '../../src/config/index.js';
import { buildPe } from '../../src/formats/pe/synth.js';
import type { LocaleManifest } from '../../src/pipeline/types.js';
import { VERSION } from '../../src/version.js';
import { runCli, tempDir } from '../helpers/env.js';
import { SOFTHSM_SKIP, SoftHsm } from '../helpers/softhsm.js';
import { startTsa, type TestTsa } from '../helpers/tsa.js';
import { CONFIG_PATH, KEYS, LOCALES, RELEASE, ZIP_SIGNED } from '../pipeline/_support.js';
import { records } from './_events.js';

const RELEASE_ID = 'sample-140.0';
const sha256File = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

function manifest(out: string, locale: string): LocaleManifest {
  return JSON.parse(readFileSync(join(out, locale, 'complete.mar.manifest.json'), 'utf8')) as LocaleManifest;
}

describe('audit trail through the CLI', () => {
  const dir = tempDir('marsign-audit-cli-');
  const log = join(dir, 'state', 'audit.jsonl');
  const out = join(dir, 'out');
  const env = { MARSIGN_CACHE_DIR: join(dir, 'cache'), MARSIGN_AUDIT_LOG: log };
  let authKey: string;
  let marKey: string;
  let fingerprint: string;

  before(async () => {
    const profile = await loadProfile(await loadConfig(CONFIG_PATH), 'dev');
    authKey = profile.authenticode!.key.id;
    marKey = profile.mar!.keys[0]!.id;
    fingerprint = profile.fingerprint;
  });

  test('sign-release: a log that verifies, one record per signing operation with the right fields', async () => {
    const r = await runCli(['sign-release', RELEASE, '-o', out], { env });
    assert.equal(r.code, 0, r.stderr);
    const v = await runCli(['audit', 'verify', log, '--json']);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    const report = (JSON.parse(v.stdout) as { logs: VerifyReport[] }).logs[0]!;
    assert.deepEqual([report.ok, report.head.status, report.predecessor.log], [true, 'ok', null]);

    const recs = records(log);
    const common = {
      client: `cli:${(await import('node:os')).userInfo().username}`,
      release: RELEASE_ID,
      container: 'mar',
      profile: 'dev',
      fingerprint,
      host: hostname(),
      version: VERSION,
    };
    let expected = 0;
    for (const locale of LOCALES) {
      const m = manifest(out, locale);
      for (const e of m.entries) {
        const mine = recs.filter((x) => x.locale === locale && x.entry === e.name);
        if (e.action === 'passthrough' || e.action === 'skipped-invalid') {
          assert.equal(mine.length, 0, `${locale} ${e.name}: no record for ${e.action}`);
          continue;
        }
        expected++;
        assert.equal(mine.length, 1, `${locale} ${e.name}`);
        const x = mine[0]!;
        assert.deepEqual(
          {
            op: x.op,
            action: x.action,
            cache: x.cache,
            inputSha256: x.inputSha256,
            outputSha256: x.outputSha256,
            keys: x.keys,
            tsa: x.tsa,
            ...Object.fromEntries(Object.keys(common).map((k) => [k, x[k as keyof AuditRecord]])),
          },
          {
            op: 'authenticode',
            action: e.action,
            cache: e.action === 'signed' ? 'miss' : 'hit',
            inputSha256: e.inputSha256,
            outputSha256: e.outputSha256,
            keys: [{ id: authKey }],
            tsa: null,
            ...common,
          },
        );
      }
      const mar = recs.filter((x) => x.locale === locale && x.entry === null);
      assert.equal(mar.length, 1, `${locale}: one MAR signature record`);
      assert.deepEqual(
        [mar[0]!.op, mar[0]!.action, mar[0]!.cache, mar[0]!.keys, mar[0]!.release],
        ['mar', 'signed', 'miss', [{ id: marKey }], RELEASE_ID],
      );
      assert.equal(mar[0]!.outputSha256, sha256File(join(out, locale, 'complete.mar')));
      assert.equal(mar[0]!.inputSha256, sha256File(join(RELEASE, locale, 'complete.mar')));
      assert.equal(mar[0]!.output, join(out, locale, 'complete.mar'));
      expected++;
    }
    // The win64 zip: its 4 PEs' records (the en-US MAR's PEs, so shared in this run), and one record for
    // the output, assembled: a zip has no container signature, so no MAR key is named.
    const zip = recs.filter((x) => x.locale === 'win64');
    assert.deepEqual(
      zip.map((x) => [x.op, x.container, x.entry === null ? null : 'entry', x.keys.length]),
      [...ZIP_SIGNED.map(() => ['authenticode', 'zip', 'entry', 1]), ['output', 'zip', null, 0]],
    );
    assert.equal(zip[4]!.action, 'assembled');
    expected += zip.length;
    assert.equal(recs.length, expected);
    assert.equal(recs.filter((x) => x.action === 'signed' && x.op === 'authenticode').length, 7);
  });

  test('a re-run served from the output cache appends records saying so; the log still verifies', async () => {
    const before = records(log).length;
    const r = await runCli(['sign-release', RELEASE, '-o', out, '--json'], { env });
    assert.equal(r.code, 0, r.stderr);
    const recs = records(log).slice(before);
    assert.equal(recs.length, 16 + 4 + ZIP_SIGNED.length + 1, 'four MARs and the zip, each served whole');
    for (const locale of LOCALES) {
      const whole = recs.filter((x) => x.locale === locale && x.entry === null);
      assert.deepEqual(
        whole.map((x) => [x.op, x.action, x.cache, x.outputSha256]),
        [['output', 'served', 'hit', sha256File(join(out, locale, 'complete.mar'))]],
      );
      const entries = recs.filter((x) => x.locale === locale && x.entry !== null);
      assert.equal(entries.length, 4);
      assert.ok(entries.every((x) => x.action === 'cached' && x.cache === 'hit'));
    }
    assert.equal((await runCli(['audit', 'verify', log])).code, 0);
  });

  test('audit find: the signing record of a signed binary, and the records of it served from the cache', async () => {
    // A binary signed in the first run (any locale's): one `signed` record, then a hit wherever else it
    // went — shared in the first run, cached in the second — in every locale whose output holds it.
    const first = records(log).find((x) => x.op === 'authenticode' && x.action === 'signed')!;
    const f = await runCli(['audit', 'find', '--sha256', first.outputSha256, '--json'], { env });
    assert.equal(f.code, 0, f.stderr);
    const found = (JSON.parse(f.stdout) as { records: FoundRecord[] }).records;
    const signed = found.filter((x) => x.record.action === 'signed');
    assert.equal(signed.length, 1, 'signed once in the release');
    assert.deepEqual(
      [signed[0]!.matched, signed[0]!.record.release, signed[0]!.record.keys[0]!.id, signed[0]!.record.entry],
      ['output', RELEASE_ID, authKey, first.entry],
    );
    assert.match(signed[0]!.record.client!, /^cli:/);
    const holders = LOCALES.filter((l) =>
      manifest(out, l).entries.some((e) => e.outputSha256 === first.outputSha256),
    ).length;
    assert.ok(holders >= 1);
    assert.equal(found.length, 2 * holders);
    const served = found.filter((x) => x.record.action === 'cached');
    assert.equal(served.length, holders, 'one cached record per holder in the re-run');
    assert.ok(served.every((x) => x.record.cache === 'hit' && x.record.release === RELEASE_ID));

    // The whole MAR of the re-run, served from the cache: its `output` record names the release too.
    const mar = sha256File(join(out, 'fr', 'complete.mar'));
    const g = await runCli(['audit', 'find', '--sha256', mar, '--json'], { env });
    const whole = (JSON.parse(g.stdout) as { records: FoundRecord[] }).records.map((x) => x.record);
    assert.deepEqual(
      whole.map((x) => [x.op, x.action, x.locale, x.release]),
      [
        ['mar', 'signed', 'fr', RELEASE_ID],
        ['output', 'served', 'fr', RELEASE_ID],
      ],
    );
    const human = await runCli(['audit', 'find', '--sha256', mar], { env });
    assert.match(human.stdout, /output served \(cache hit\).*\n.*release sample-140\.0 +locale fr/);

    const rel = await runCli(['audit', 'find', '--release', RELEASE_ID, '--json'], { env });
    assert.equal((JSON.parse(rel.stdout) as { count: number }).count, 2 * (20 + ZIP_SIGNED.length + 1));
    const none = await runCli(['audit', 'find', '--sha256', '0'.repeat(64)], { env });
    assert.deepEqual([none.code, none.stdout.trim()], [1, 'no record']);
    const bad = await runCli(['audit', 'find', '--sha256', 'abc'], { env });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^marsign: AUDIT_BAD_QUERY: /);
  });

  test('audit verify exits 1 naming the line of a removed, edited, swapped or cut record', async () => {
    const lines = readFileSync(log, 'utf8').split('\n').slice(0, -1);
    const cases: [string, string[] | string, number][] = [
      ['removed', lines.filter((_, i) => i !== 9), 10],
      ['edited', lines.map((l, i) => (i === 9 ? l.replace(RELEASE_ID, 'other-release') : l)), 10],
      ['swapped', lines.map((l, i) => (i === 9 ? lines[10]! : i === 10 ? lines[9]! : l)), 10],
      ['cut', lines.join('\n').slice(0, -20), lines.length],
    ];
    for (const [what, content, line] of cases) {
      const copy = join(dir, `${what}.jsonl`);
      writeFileSync(copy, typeof content === 'string' ? content : content.join('\n') + '\n');
      copyFileSync(`${log}.head`, `${copy}.head`);
      const v = await runCli(['audit', 'verify', copy]);
      assert.equal(v.code, 1, `${what}: ${v.stdout}`);
      assert.match(
        v.stderr,
        new RegExp(`^marsign: AUDIT_CHAIN_BROKEN: .*${what}\\.jsonl line ${line}: `),
        what,
      );
      assert.match(v.stdout, new RegExp(`BROKEN at line ${line} `));
    }
    const missing = await runCli(['audit', 'verify', join(dir, 'nope.jsonl')]);
    assert.equal(missing.code, 2);
  });

  test('a log that cannot be written stops sign-locale before it signs anything', async () => {
    const blocker = join(dir, 'not-a-dir');
    writeFileSync(blocker, 'x');
    const o = join(dir, 'blocked.mar');
    const r = await runCli(
      ['sign-locale', join(RELEASE, 'de', 'complete.mar'), '-o', o, '-p', 'dev', '-c', CONFIG_PATH],
      {
        env: { ...env, MARSIGN_AUDIT_LOG: join(blocker, 'audit.jsonl') },
      },
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^marsign: AUDIT_LOG_UNWRITABLE: .*not-a-dir/m);
    assert.equal(existsSync(o), false);
    // A dry run signs nothing and needs no log.
    const dry = await runCli(
      ['sign-locale', join(RELEASE, 'de', 'complete.mar'), '--dry-run', '-p', 'dev', '-c', CONFIG_PATH],
      {
        env: { ...env, MARSIGN_AUDIT_LOG: join(blocker, 'audit.jsonl') },
      },
    );
    assert.equal(dry.code, 0, dry.stderr);
  });

  describe('sign-pe with a timestamp authority, sign-mar', () => {
    let tsa: TestTsa;
    before(async () => {
      tsa = await startTsa();
    });
    after(() => tsa.stop());

    test('each writes one record: the PE with the authority that answered, the MAR with its keys', async () => {
      const cfg = JSON.parse(readFileSync(CONFIG_PATH, 'utf8')) as {
        profiles: { dev: { authenticode: Record<string, unknown>; mar: { keys: string[] } } };
      };
      const a = cfg.profiles.dev.authenticode;
      a.certChain = join(KEYS, 'codesign.chain.pem');
      a.key = join(KEYS, 'codesign.key.pem');
      a.timestamp = { urls: [tsa.url] };
      cfg.profiles.dev.mar.keys = [join(KEYS, 'mar.key.pem')];
      const config = join(dir, 'tsa.config.json');
      writeFileSync(config, JSON.stringify(cfg));
      const tlog = join(dir, 'tsa', 'audit.jsonl');
      const e = { ...env, MARSIGN_AUDIT_LOG: tlog };

      const pe = join(dir, 'in.exe');
      writeFileSync(pe, buildPe({ arch: 'x64', kind: 'exe', name: 'audit-pe' }));
      const s = await runCli(
        ['sign-pe', pe, '-o', join(dir, 'out.exe'), '--profile', 'dev', '--config', config],
        { env: e },
      );
      assert.equal(s.code, 0, s.stderr);
      const m = await runCli(
        [
          'sign-mar',
          join(RELEASE, 'ja', 'complete.mar'),
          '-o',
          join(dir, 'ja.mar'),
          '--profile',
          'dev',
          '--config',
          config,
        ],
        { env: e },
      );
      assert.equal(m.code, 0, m.stderr);
      // A locale through the pipeline with the same authority: its signed entries name it.
      const l = await runCli(
        [
          'sign-locale',
          join(RELEASE, 'fr', 'complete.mar'),
          '-o',
          join(dir, 'fr.mar'),
          '-p',
          'dev',
          '-c',
          config,
          '--release',
          'r2',
          '--locale',
          'fr',
        ],
        { env: { ...e, MARSIGN_CACHE_DIR: join(dir, 'cache-tsa') } },
      );
      assert.equal(l.code, 0, l.stderr);
      const [p, mr, ...loc] = records(tlog);
      assert.deepEqual(
        [p!.op, p!.container, p!.entry, p!.action, p!.tsa, p!.input, p!.keys],
        [
          'authenticode',
          'pe',
          null,
          'signed',
          `${new URL(tsa.url).origin}${new URL(tsa.url).pathname}`,
          pe,
          [{ id: authKey }],
        ],
      );
      assert.equal(p!.inputSha256, sha256File(pe));
      assert.equal(p!.outputSha256, sha256File(join(dir, 'out.exe')));
      assert.deepEqual(
        [mr!.op, mr!.container, mr!.keys, mr!.tsa, mr!.outputSha256],
        ['mar', 'mar', [{ id: marKey }], null, sha256File(join(dir, 'ja.mar'))],
      );
      const signed = loc.filter((x) => x.op === 'authenticode' && x.action === 'signed');
      assert.equal(signed.length, 4);
      assert.ok(
        signed.every((x) => x.tsa === p!.tsa && x.release === 'r2' && x.locale === 'fr'),
        JSON.stringify(signed),
      );
      assert.equal((await runCli(['audit', 'verify', tlog])).code, 0);
    });
  });

  test('a passphrase-protected key: the passphrase is in no record, output or error', async () => {
    const PASS = 'audit-passphrase-7f3e91';
    const enc = join(dir, 'codesign.enc.pem');
    const o = spawnSync('openssl', [
      'pkcs8',
      '-topk8',
      '-v2',
      'aes-256-cbc',
      '-in',
      join(KEYS, 'codesign.key.pem'),
      '-out',
      enc,
      '-passout',
      `pass:${PASS}`,
    ]);
    assert.equal(o.status, 0, o.stderr.toString());
    const cfg = JSON.parse(readFileSync(CONFIG_PATH, 'utf8')) as {
      profiles: { dev: { authenticode: Record<string, unknown>; mar: { keys: string[] } } };
    };
    Object.assign(cfg.profiles.dev.authenticode, {
      certChain: join(KEYS, 'codesign.chain.pem'),
      key: enc,
      passphraseEnv: 'MARSIGN_TEST_PASS',
    });
    cfg.profiles.dev.mar.keys = [join(KEYS, 'mar.key.pem')];
    const config = join(dir, 'enc.config.json');
    writeFileSync(config, JSON.stringify(cfg));
    const elog = join(dir, 'enc', 'audit.jsonl');
    const e = {
      ...env,
      MARSIGN_AUDIT_LOG: elog,
      MARSIGN_TEST_PASS: PASS,
      MARSIGN_CACHE_DIR: join(dir, 'cache-enc'),
    };
    const pe = join(dir, 'enc-in.exe');
    writeFileSync(pe, buildPe({ arch: 'x86', kind: 'dll', name: 'audit-enc' }));
    const runs = [
      await runCli(['sign-pe', pe, '-o', join(dir, 'enc-out.exe'), '--profile', 'dev', '--config', config], {
        env: e,
      }),
      await runCli(
        [
          'sign-locale',
          join(RELEASE, 'ja', 'complete.mar'),
          '-o',
          join(dir, 'enc.mar'),
          '-p',
          'dev',
          '-c',
          config,
          '--json',
        ],
        { env: e },
      ),
      // A wrong passphrase: an error, and still no passphrase in it.
      await runCli(['sign-pe', pe, '-o', join(dir, 'enc-bad.exe'), '--profile', 'dev', '--config', config], {
        env: { ...e, MARSIGN_TEST_PASS: `${PASS}-wrong` },
      }),
    ];
    assert.deepEqual(
      runs.map((r) => r.code),
      [0, 0, 2],
      runs.map((r) => r.stderr).join('\n'),
    );
    assert.equal(records(elog).length, 1 + 5);
    const text = [
      readFileSync(elog, 'utf8'),
      readFileSync(`${elog}.head`, 'utf8'),
      ...runs.flatMap((r) => [r.stdout, r.stderr]),
    ];
    for (const t of text) assert.ok(!t.includes(PASS), 'the passphrase leaked');
  });

  describe('keys in a PKCS#11 token', { skip: SOFTHSM_SKIP }, () => {
    const PIN = '20261203-audit-PIN';
    const TOKEN = 'marsign-audit';

    test('records name the keys by id and PIN-free URI; the PIN is nowhere in the log', async () => {
      const hsm = new SoftHsm();
      const der = (name: string): string => {
        const p = join(dir, `${name}.der`);
        writeFileSync(p, new X509Certificate(readFileSync(join(KEYS, `${name}.cert.pem`))).raw);
        return p;
      };
      const t = { token: TOKEN, pin: PIN };
      hsm.initToken(TOKEN, PIN);
      hsm.importKey(join(KEYS, 'codesign.key.pem'), { ...t, label: 'codesign', id: '01' });
      hsm.importCert(der('codesign'), { ...t, label: 'codesign', id: '01' });
      hsm.importKey(join(KEYS, 'mar.key.pem'), { ...t, label: 'mar', id: '03' });
      const pinFile = join(dir, 'pin.txt');
      writeFileSync(pinFile, PIN, { mode: 0o600 });
      const fixture = JSON.parse(readFileSync(CONFIG_PATH, 'utf8')) as {
        profiles: { dev: { authenticode: Record<string, unknown>; mar: Record<string, unknown> } };
      };
      const { certChain: _c, key: _k, ...auth } = fixture.profiles.dev.authenticode;
      const config = join(dir, 'p11.config.json');
      writeFileSync(
        config,
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
                keys: [`pkcs11:token=${TOKEN};object=mar?pin-source=file:${pinFile}`],
              },
            },
          },
        }),
      );
      const plog = join(dir, 'p11', 'audit.jsonl');
      const r = await runCli(
        [
          'sign-locale',
          join(RELEASE, 'de', 'complete.mar'),
          '-o',
          join(dir, 'p11.mar'),
          '-p',
          'dev',
          '-c',
          config,
        ],
        {
          env: {
            ...hsm.env,
            ...env,
            MARSIGN_AUDIT_LOG: plog,
            MARSIGN_CACHE_DIR: join(dir, 'cache-p11'),
            MARSIGN_TEST_PIN: PIN,
          },
        },
      );
      assert.equal(r.code, 0, r.stderr);
      const recs = records(plog);
      const auth1 = recs.find((x) => x.op === 'authenticode')!;
      const mar = recs.find((x) => x.op === 'mar')!;
      assert.deepEqual(auth1.keys, [{ id: authKey, uri: `pkcs11:token=${TOKEN};object=codesign` }]);
      assert.deepEqual(mar.keys, [{ id: marKey, uri: `pkcs11:token=${TOKEN};object=mar` }]);
      const text = readFileSync(plog, 'utf8') + readFileSync(`${plog}.head`, 'utf8');
      assert.ok(!text.includes(PIN), 'no PIN in the log');
      assert.ok(!text.includes('pin-source') && !text.includes(pinFile), 'no PIN source in the log');
    });
  });
});
