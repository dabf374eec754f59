/**
 * The operator dashboard in a real browser (chromium): it shows a running release's progress and a
 * failed locale's typed error, and updates live as the release completes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { readMar } from '../../src/formats/mar/index.js';
import { FileSource } from '../../src/io/byte-source.js';
import { Pipeline } from '../../src/pipeline/index.js';
import { createLogger } from '../../src/service/logger.js';
import { WorkerService, type LocaleSigner } from '../../src/service/worker.js';
import { BROWSER_SKIP, launchBrowser, type Browser } from '../helpers/browser.js';
import { REDIS_SKIP, TestRedis } from '../helpers/redis.js';
import { TOKEN_ENV, copyRelease, startServer, waitFor, writeConfig, type RunningServer } from './harness.js';
import { Writable } from 'node:stream';

describe('dashboard', { skip: REDIS_SKIP ?? BROWSER_SKIP, timeout: 150_000 }, () => {
  let redis: TestRedis;
  let dir: string;
  let server: RunningServer;
  let worker: WorkerService;
  let browser: Browser;
  const token = randomBytes(24).toString('hex');
  let openGate: () => void = () => undefined;
  const gate = new Promise<void>((r) => (openGate = r));

  before(async () => {
    redis = await TestRedis.start();
    dir = mkdtempSync(join(tmpdir(), 'marsign-dashboard-'));
    const cfgPath = writeConfig(dir, redis.url, ['dev']);
    process.env[TOKEN_ENV] = token;
    server = await startServer(cfgPath);
    const config = await loadConfig(cfgPath);
    const quiet = createLogger({ level: 'warn' }, new Writable({ write: (_c, _e, cb) => cb() }));
    worker = await WorkerService.start({
      config,
      concurrency: 2,
      threads: 1,
      canaryIntervalMs: 0,
      logger: quiet,
      // The real pipeline; the `de` locale of `live-1` holds its result until the test has seen it
      // running in the browser, so "running" is observed deterministically.
      createSigner: async (coordinator) => {
        const p = await Pipeline.create({ config, coordinator, threads: 1 });
        const signer: LocaleSigner = {
          signLocale: async (o) => {
            const m = await p.signLocale(o);
            if (o.output.includes(`${join('live', 'de')}`)) await gate;
            return m;
          },
          stats: () => p.stats(),
          canary: (profile) => p.canary(profile),
          close: () => p.close(),
        };
        return signer;
      },
    });
    browser = await launchBrowser();
  });

  after(async () => {
    openGate();
    await browser?.close();
    await worker?.close('test end');
    await server?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('shows a running release, a failed locale with its error code, and live completion', async () => {
    const live = copyRelease(join(dir, 'in-live'), ['en-US', 'de']);
    const broken = copyRelease(join(dir, 'in-broken'), ['en-US', 'fr']);
    const src = await FileSource.open(broken.fr!);
    const info = await readMar(src);
    await src.close();
    const victim = info.entries.find((e) => /\.(exe|dll)$/.test(e.name))!;
    const fh = await open(broken.fr!, 'r+');
    await fh.write(Buffer.alloc(48, 0x55), 0, undefined, victim.offset + 10);
    await fh.close();
    const post = async (doc: unknown) => {
      const res = await fetch(`${server.url}/releases`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(doc),
      });
      assert.equal(res.status, 201, await res.text());
    };
    await post({ release: 'live-1', profile: 'dev', output: join(dir, 'live'), locales: live });
    await post({ release: 'broken-1', profile: 'dev', output: join(dir, 'broken'), locales: broken });

    const page = await browser.context.newPage();
    await page.goto(`${server.url}/?token=${token}`);
    assert.equal(new URL(page.url()).search, '', 'the token is dropped from the address bar');
    assert.equal(
      (await browser.context.cookies()).find((c) => c.name === 'marsign_session')?.httpOnly,
      true,
      'the session cookie is HttpOnly',
    );

    const liveRel = page.locator('section.release[data-release="live-1"]');
    await liveRel.and(page.locator('[data-state="running"]')).waitFor({ timeout: 60_000 });
    const de = liveRel.locator('tr[data-locale="de"]');
    await de.and(page.locator('[data-state="active"]')).waitFor({ timeout: 60_000 });
    await waitFor(
      'de to show all entries done',
      async () => {
        const m = /(\d+)\/(\d+)/.exec((await de.locator('.entries').textContent()) ?? '');
        return (m !== null && Number(m[2]) > 0 && m[1] === m[2]) || undefined;
      },
      30_000,
    );
    const bar = de.locator('progress');
    assert.equal(await bar.getAttribute('value'), await bar.getAttribute('max'));
    // Attempts are real starts (1 while it runs, not BullMQ's failed-attempt count 0); the worker running
    // it is named, and listed with its last heartbeat, alive.
    assert.equal(await de.locator('td.attempts').textContent(), '1');
    assert.match((await de.locator('td.worker').textContent()) ?? '', new RegExp(`^${worker.id} \\(beat `));
    const beatRow = page.locator(`#heartbeats tr[data-worker="${worker.id}"]`);
    await beatRow.waitFor({ timeout: 10_000 });
    assert.equal(await beatRow.getAttribute('data-state'), 'alive');
    assert.match((await beatRow.locator('td.age').textContent()) ?? '', / ago$/);
    // en-US is not held: it completes (it may still be finishing when de's entries are all done).
    await liveRel
      .locator('tr[data-locale="en-US"]')
      .and(page.locator('[data-state="completed"]'))
      .waitFor({ timeout: 60_000 });

    const brokenRel = page.locator('section.release[data-release="broken-1"]');
    await brokenRel.and(page.locator('[data-state="failed"]')).waitFor({ timeout: 60_000 });
    const frError = brokenRel.locator('tr[data-locale="fr"] td.error');
    await waitFor(
      'the fr error to show',
      async () => /^[A-Z][A-Z0-9_]+: /.test((await frError.textContent()) ?? '') || undefined,
      30_000,
    );
    assert.match((await frError.textContent()) ?? '', /^[A-Z][A-Z0-9_]+: /);
    assert.equal(await brokenRel.locator('tr[data-locale="fr"]').getAttribute('data-state'), 'failed');
    assert.match((await brokenRel.locator('.release-error').textContent()) ?? '', /^[A-Z][A-Z0-9_]+: /);

    // Live update: let the held locale finish; the page turns the release completed by itself.
    openGate();
    await liveRel.and(page.locator('[data-state="completed"]')).waitFor({ timeout: 60_000 });
    assert.equal(await liveRel.locator('tr[data-locale="de"]').getAttribute('data-state'), 'completed');
    const workers = await page.locator('#workers').textContent();
    assert.equal(workers, '1');
    await page.close();
  });
});
