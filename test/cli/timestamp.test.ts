/**
 * Timestamps through the CLI, against real `openssl ts` authorities on 127.0.0.1 (test/helpers/tsa.ts):
 * a bad authority reply is an error naming the authority (exit 2, not the "invalid" exit 1), and
 * `verify` says a timestamp is "not checked" unless the TSA chain was checked with --tsa-ca.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { buildPe } from '../../src/formats/pe/synth.js';
import { generateDevKeys, type DevKeys } from '../../src/keys/index.js';
import { runCli, tempDir } from '../helpers/env.js';
import { startTsa, type TestTsa } from '../helpers/tsa.js';

const dir = tempDir('marsign-cli-timestamp-');
// Made at the top level: a tempDir made inside before() would be removed when before() ends.
const tsaDirs = ['ok', 'garbage', 'reject'].map((m) => tempDir(`marsign-tsa-${m}-`));
let dev: DevKeys;
let ok: TestTsa;
let garbage: TestTsa;
let reject: TestTsa;

before(async () => {
  dev = await generateDevKeys(join(dir, 'dev'));
  ok = await startTsa({ dir: tsaDirs[0]!, mode: 'ok' });
  garbage = await startTsa({ dir: tsaDirs[1]!, mode: 'garbage' });
  reject = await startTsa({ dir: tsaDirs[2]!, mode: 'reject' });
});
after(async () => {
  for (const t of [ok, garbage, reject]) await t?.stop();
});

/** The dev config with the dev profile timestamping at `urls` (written beside it: relative key paths). */
function configWith(name: string, urls: string[]): string {
  const cfg = JSON.parse(readFileSync(dev.config, 'utf8'));
  cfg.profiles.dev.authenticode.timestamp = { urls, backoffMs: 1 };
  const path = join(dev.dir, `${name}.config.json`);
  writeFileSync(path, JSON.stringify(cfg));
  return path;
}

function input(name: string): string {
  const f = join(dir, `${name}.exe`);
  writeFileSync(f, buildPe({ arch: 'x64', name }));
  return f;
}

/** `marsign sign-pe IN -o OUT` with the dev profile timestamping at `urls`. */
const signPe = (f: string, out: string, name: string, urls: string[], ...extra: string[]) =>
  runCli(['sign-pe', f, '-o', out, '--profile', 'dev', '--config', configWith(name, urls), ...extra]);

test('sign-pe: a garbage reply exits 2 (an error, not "invalid") naming the authority; no output file', async () => {
  const f = input('garbage');
  const out = `${f}.signed`;
  const r = await signPe(f, out, 'garbage', [garbage.url]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    new RegExp(
      `^marsign: TSA_BAD_REPLY: no usable timestamp token: ${garbage.url}: TSA_BAD_REPLY: not a TimeStampResp`,
      'm',
    ),
  );
  assert.equal(existsSync(out), false);

  // Several authorities: each is named with its own failure; --json gives the typed error.
  const two = await signPe(f, out, 'two-bad', [reject.url, garbage.url], '--json');
  assert.equal(two.code, 2, two.stdout + two.stderr);
  const doc = JSON.parse(two.stdout);
  assert.equal(doc.error.name, 'AuthorityError');
  assert.equal(doc.error.code, 'TSA_REJECTED');
  assert.ok(doc.error.message.includes(`${reject.url}: TSA_REJECTED: `), doc.error.message);
  assert.ok(doc.error.message.includes(`${garbage.url}: TSA_BAD_REPLY: `), doc.error.message);
  assert.equal(existsSync(out), false);
});

test('verify: a timestamp is "not checked" without --tsa-ca, ok with the right one, invalid with a wrong one', async () => {
  const f = input('stamped');
  const signed = `${f}.signed`;
  const s = await signPe(f, signed, 'ok', [ok.url]);
  assert.equal(s.code, 0, s.stderr);

  const plain = await runCli(['verify', signed, '--ca', dev.caCert]);
  assert.equal(plain.code, 0, plain.stdout + plain.stderr);
  assert.match(plain.stdout, /PE digest ok, signature ok, chain ok, timestamp not checked 20\d\d-/);
  assert.doesNotMatch(plain.stdout, /timestamp ok/);
  assert.match(plain.stdout, /^not checked: timestamp: no TSA CA given \(--tsa-ca\)/m);

  const json = JSON.parse((await runCli(['verify', signed, '--ca', dev.caCert, '--json'])).stdout);
  assert.equal(json.ok, true);
  assert.equal(json.status, 'not checked');
  assert.equal(json.pe.timestamp.present, true);
  assert.equal(
    'valid' in json.pe.timestamp,
    false,
    'valid: true is never claimed for an unchecked TSA chain',
  );
  assert.equal(json.pe.signatures[0].checks.timestamp.status, 'not checked');
  assert.equal(json.pe.chainValid, true);
  assert.deepEqual(json.notChecked, json.pe.notChecked);
  assert.equal(json.notChecked.length, 1);

  const checked = await runCli(['verify', signed, '--ca', dev.caCert, '--tsa-ca', ok.caPemPath, '--json']);
  assert.equal(checked.code, 0, checked.stdout);
  const cdoc = JSON.parse(checked.stdout);
  assert.equal(cdoc.status, 'ok');
  assert.equal(cdoc.pe.timestamp.valid, true);
  assert.deepEqual(cdoc.notChecked, []);

  const wrong = await runCli(['verify', signed, '--ca', dev.caCert, '--tsa-ca', dev.caCert]);
  assert.equal(wrong.code, 1, wrong.stdout);
  assert.match(wrong.stdout, /timestamp INVALID/);
});
