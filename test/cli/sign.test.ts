import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { before, test } from 'node:test';
import { buildPe } from '../../src/formats/pe/synth.js';
import { generateDevKeys, type DevKeys } from '../../src/keys/index.js';
import { verifyMar } from '../../src/signing/verify-mar.js';
import { PROJECT_ROOT, SHARED_SKIP, peCorpus, peerMar, runCli, tempDir } from '../helpers/env.js';
import { writeTestMar } from '../helpers/mar-keys.js';

const dir = tempDir('marsign-cli-sign-');
let dev: DevKeys;
let otherCa: string;

before(async () => {
  dev = await generateDevKeys(join(dir, 'dev'));
  otherCa = (await generateDevKeys(join(dir, 'other'))).caCert;
});

/**
 * runCli with a cwd outside the checkout: helpers/env.ts runCli passes `--import tsx`, which Node
 * resolves from the cwd, so here tsx is given as an absolute URL.
 */
function runCliIn(cwd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.MARSIGN_CONFIG;
  const r = spawnSync(
    process.execPath,
    ['--import', import.meta.resolve('tsx'), join(PROJECT_ROOT, 'src/cli/main.ts'), ...args],
    {
      cwd,
      env,
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function osslVerify(file: string, ca: string): { ok: boolean; out: string } {
  const r = spawnSync('osslsigncode', ['verify', '-CAfile', ca, '-in', file], { encoding: 'utf8' });
  return { ok: r.status === 0 && /Signature verification: ok/.test(r.stdout), out: r.stdout + r.stderr };
}

const marKeysConfig = (keys: string[]) => {
  const p = join(dir, `mar-${keys.join('-')}.json`);
  writeFileSync(
    p,
    JSON.stringify({
      profiles: {
        peer: { mar: { keys: keys.map((k) => peerMar(`keys/${k}.TEST-ONLY.key.pem`)), algorithm: 'sha384' } },
      },
    }),
  );
  return p;
};

test(
  'sign-mar with the TEST-ONLY keys reproduces signed_pib.mar and multiple_signed_pib.mar byte for byte',
  { skip: SHARED_SKIP },
  async () => {
    for (const [keys, expected] of [
      [['mycert'], 'signed_pib.mar'],
      [['mycert', 'mycert2', 'mycert3'], 'multiple_signed_pib.mar'],
    ] as const) {
      const cfg = marKeysConfig([...keys]);
      const out = join(dir, expected);
      const r = await runCli([
        'sign-mar',
        peerMar('firefox-libmar/binary_data.mar'),
        '-o',
        out,
        '--profile',
        'peer',
        '--config',
        cfg,
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(readFileSync(out), readFileSync(peerMar(`firefox-libmar/${expected}`)));
      const doc = JSON.parse(r.stdout);
      assert.equal(doc.signatures.length, keys.length);
      assert.match(r.stderr, new RegExp(`config ${cfg} sha256 [0-9a-f]{64}`));
    }
  },
);

test('sign-mar finds the config through $MARSIGN_CONFIG and ./marsign.config.json', async () => {
  const input = await writeTestMar(join(dir, 'unsigned-for-config.mar'));
  const viaFlag = join(dir, 'flag.mar');
  const r0 = await runCli(['sign-mar', input, '-o', viaFlag, '--profile', 'dev', '--config', dev.config]);
  assert.equal(r0.code, 0, r0.stderr);
  assert.equal((await verifyMar(viaFlag, [dev.marCertDer])).valid, true);
  const viaEnv = join(dir, 'env.mar');
  const r1 = await runCli(['sign-mar', input, '-o', viaEnv, '--profile', 'dev'], {
    env: { MARSIGN_CONFIG: dev.config },
  });
  assert.equal(r1.code, 0, r1.stderr);
  assert.match(r1.stderr, new RegExp(`config ${dev.config} sha256 [0-9a-f]{64}`));
  assert.deepEqual(readFileSync(viaEnv), readFileSync(viaFlag), 'same config, same signed bytes');
  const cwd = join(dir, 'cwd');
  mkdirSync(cwd, { recursive: true });
  // Only the dev profile's MAR section, with the key by absolute path: the same signer.
  const cfg = { profiles: { dev: { mar: { keys: [dev.marKey], algorithm: 'sha384' } } } };
  writeFileSync(join(cwd, 'marsign.config.json'), JSON.stringify(cfg));
  const viaCwd = join(dir, 'cwd.mar');
  const r2 = runCliIn(cwd, ['sign-mar', input, '-o', viaCwd, '--profile', 'dev']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stderr, new RegExp(`config ${join(cwd, 'marsign.config.json')} sha256`));
  assert.deepEqual(readFileSync(viaCwd), readFileSync(viaFlag));
  const r3 = runCliIn(dir, ['sign-mar', input, '-o', join(dir, 'x.mar'), '--profile', 'dev']);
  assert.equal(r3.code, 2, r3.stderr);
  assert.match(r3.stderr, /marsign: CONFIG_NOT_FOUND:/);
});

test('sign-mar / sign-pe refuse a profile without that section; a non-PE input is an error (exit 2)', async () => {
  const macOnly = join(dir, 'authonly.json');
  writeFileSync(
    macOnly,
    JSON.stringify({
      profiles: {
        a: { authenticode: { certChain: dev.codeSigningChain, key: dev.codeSigningKey } },
        m: { mar: { keys: [dev.marKey] } },
      },
    }),
  );
  const r1 = await runCli([
    'sign-mar',
    join(dir, 'whatever.mar'),
    '-o',
    join(dir, 'o.mar'),
    '--profile',
    'a',
    '--config',
    macOnly,
  ]);
  assert.equal(r1.code, 2);
  assert.match(r1.stderr, /PROFILE_NO_MAR/);
  const r2 = await runCli([
    'sign-pe',
    join(dir, 'whatever.exe'),
    '-o',
    join(dir, 'o.exe'),
    '--profile',
    'm',
    '--config',
    macOnly,
  ]);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /PROFILE_NO_AUTHENTICODE/);
  const notPe = join(dir, 'text.exe');
  writeFileSync(notPe, 'just text, not a PE');
  const r3 = await runCli([
    'sign-pe',
    notPe,
    '-o',
    join(dir, 'o.exe'),
    '--profile',
    'a',
    '--config',
    macOnly,
  ]);
  assert.equal(r3.code, 2, r3.stderr);
  assert.match(r3.stderr, /marsign: [A-Z_]+:/);
});

async function roundTrip(input: string): Promise<void> {
  const out = join(dir, `signed-${basename(input)}`);
  const s = await runCli(['sign-pe', input, '-o', out, '--profile', 'dev', '--config', dev.config, '--json']);
  assert.equal(s.code, 0, s.stderr);
  assert.equal(JSON.parse(s.stdout).output, out);
  const v = await runCli(['verify', out, '--ca', dev.caCert, '--json']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const doc = JSON.parse(v.stdout);
  assert.equal(doc.type, 'pe');
  assert.equal(doc.pe.digestMatches, true);
  assert.equal(doc.pe.signatureValid, true);
  assert.equal(doc.pe.chainValid, true);
  const o = osslVerify(out, dev.caCert);
  assert.ok(o.ok, `osslsigncode agrees: ${o.out}`);
  // Another CA: both verifiers refuse the chain.
  const w = await runCli(['verify', out, '--ca', otherCa]);
  assert.equal(w.code, 1, w.stdout);
  assert.ok(!osslVerify(out, otherCa).ok, 'osslsigncode refuses the other CA too');
  // A flipped byte in the signed image: both refuse.
  const bytes = Buffer.from(readFileSync(out));
  bytes[0x100]! ^= 0xff;
  const bad = join(dir, `tampered-${basename(input)}`);
  writeFileSync(bad, bytes);
  const t = await runCli(['verify', bad, '--ca', dev.caCert]);
  assert.equal(t.code, 1, t.stdout);
  assert.match(t.stdout, /verification: FAILED/);
  assert.ok(!osslVerify(bad, dev.caCert).ok, 'osslsigncode refuses the tampered file');
}

test('sign-pe + verify round trip on synthetic PEs (x86 exe, x64 dll), osslsigncode agreeing', async () => {
  for (const [arch, kind] of [
    ['x86', 'exe'],
    ['x64', 'dll'],
  ] as const) {
    const f = join(dir, `synth-${arch}.${kind}`);
    writeFileSync(f, buildPe({ arch, kind, name: `synth ${arch}`, payload: new Uint8Array(5000).fill(3) }));
    await roundTrip(f);
  }
});

test('sign-pe + verify round trip on a real corpus PE, osslsigncode agreeing', async (t) => {
  const corpus = peCorpus();
  if (typeof corpus === 'string') return t.skip(corpus);
  const f = corpus.find((p) => p.endsWith('.dll') && p.includes('wine64')) ?? corpus[0]!;
  await roundTrip(f);
});
