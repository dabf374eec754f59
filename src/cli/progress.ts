/**
 * Progress display for sign-locale / sign-release: cli-progress bars on stderr when it is a terminal,
 * nothing otherwise (pipes, CI logs and --json stay quiet and parseable).
 */
import { createRequire } from 'node:module';
import type * as CliProgress from 'cli-progress';
import type { ReleaseProgress } from '../pipeline/release.js';
import type { LocaleProgress } from '../pipeline/types.js';

export interface ProgressDisplay<P> {
  update(p: P): void;
  stop(): void;
}

const NOOP = { update: () => undefined, stop: () => undefined };

/**
 * cli-progress, loaded only when a bar is shown (a terminal, not --json): it is not needed, and not
 * paid for at start-up, by pipes, CI or any other command. A synchronous require (it is CommonJS)
 * keeps the display factories below synchronous.
 */
function cliProgress(): typeof CliProgress {
  return createRequire(import.meta.url)('cli-progress') as typeof CliProgress;
}

/** A display only when stderr is a TTY and output is for humans. */
export function wantProgress(opts: { json?: boolean; progress?: boolean }): boolean {
  if (opts.progress === false || opts.json) return false;
  return process.stderr.isTTY === true;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const BAR_OPTIONS: CliProgress.Options = {
  stream: process.stderr,
  hideCursor: true,
  clearOnComplete: true,
  barsize: 24,
  fps: 10,
};

export function localeProgress(enabled: boolean, label: string): ProgressDisplay<LocaleProgress> {
  if (!enabled) return NOOP;
  const bar = new (cliProgress().SingleBar)({
    ...BAR_OPTIONS,
    format: `${label} {bar} {value}/{total} entries | {bytes} | hits {hits} signed {misses} passthrough {passthrough}`,
  });
  let started = false;
  return {
    update(p) {
      const payload = {
        bytes: `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`,
        hits: p.hits,
        misses: p.misses,
        passthrough: p.passthrough,
      };
      if (!started) {
        bar.start(p.entriesTotal, p.entriesDone, payload);
        started = true;
      } else bar.update(p.entriesDone, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** Overall bar (locales) plus one bar per locale being signed. */
export function releaseProgress(enabled: boolean, localesTotal: number): ProgressDisplay<ReleaseProgress> {
  if (!enabled) return NOOP;
  const multi = new (cliProgress().MultiBar)({
    ...BAR_OPTIONS,
    format: '{label} {bar} {value}/{total} {unit} | {info}',
  });
  const overall = multi.create(localesTotal, 0, { label: 'release'.padEnd(10), unit: 'locales', info: '' });
  const bars = new Map<string, CliProgress.SingleBar>();
  return {
    update(p) {
      overall.update(p.localesDone, {
        info: `${p.entriesDone} entries, ${formatBytes(p.bytesDone)}, hits ${p.hits}, signed ${p.misses}`,
      });
      for (const [locale, lp] of Object.entries(p.current)) {
        let b = bars.get(locale);
        const info = `hits ${lp.hits} signed ${lp.misses} passthrough ${lp.passthrough}`;
        if (!b) {
          b = multi.create(lp.entriesTotal, lp.entriesDone, {
            label: locale.slice(0, 10).padEnd(10),
            unit: 'entries',
            info,
          });
          bars.set(locale, b);
        } else b.update(lp.entriesDone, { info });
      }
      for (const [locale, b] of bars) {
        if (!(locale in p.current)) {
          multi.remove(b);
          bars.delete(locale);
        }
      }
    },
    stop() {
      multi.stop();
    },
  };
}
