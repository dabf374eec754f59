/**
 * Progress display for sign-locale / sign-release: lines redrawn in place on stderr when it is a
 * terminal, nothing otherwise (pipes, CI logs and --json stay quiet and parseable).
 *
 * Figures are measured: bytes are the locales' stored bytes, finished entries plus the share of entries
 * the pool threads report done so far (LocaleProgress.workBytesDone); the rate is bytes done over the
 * time measured since work started, and an ETA is shown only once there is such a measurement.
 */
import type { ReleaseProgress } from '../pipeline/release.js';
import type { LocaleProgress } from '../pipeline/types.js';

export interface ProgressDisplay<P> {
  update(p: P): void;
  stop(): void;
}

/** What the display writes to (process.stderr; a fake in tests). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

export interface DisplayOptions {
  stream?: ProgressStream;
  /** Milliseconds clock (tests pass a fake one). */
  now?: () => number;
  /** Least time between two redraws (default REDRAW_INTERVAL_MS). */
  intervalMs?: number;
}

/** At most five redraws a second: enough to look live, cheap on a slow terminal or ssh. */
export const REDRAW_INTERVAL_MS = 200;
/** No rate (and so no ETA) before work has run this long: one early burst is not a throughput. */
export const MIN_MEASURE_MS = 1000;

const NOOP = { update: () => undefined, stop: () => undefined };

/** A display only when stderr is a TTY and output is for humans. */
export function wantProgress(opts: { json?: boolean; progress?: boolean }): boolean {
  if (opts.progress === false || opts.json) return false;
  return process.stderr.isTTY === true;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** `m:ss`, or `h:mm:ss` from an hour. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * Throughput measured from `start` (when work began) to the latest sample: undefined until work has run
 * MIN_MEASURE_MS and some bytes are done, so nothing is shown that was not measured.
 */
export class Throughput {
  private start: number | undefined;
  private last: { t: number; bytes: number } | undefined;

  /** Work starts now (the clock the rate is measured from); later calls keep the first start. */
  begin(t: number): void {
    this.start ??= t;
  }

  sample(t: number, bytes: number): void {
    this.begin(t);
    this.last = { t, bytes };
  }

  /** Bytes per second, or undefined before a measurement. */
  rate(): number | undefined {
    if (this.start === undefined || !this.last) return undefined;
    const ms = this.last.t - this.start;
    if (ms < MIN_MEASURE_MS || this.last.bytes <= 0) return undefined;
    return (this.last.bytes * 1000) / ms;
  }

  /** Seconds left for `total` bytes at the measured rate, or undefined before a measurement. */
  eta(total: number): number | undefined {
    const r = this.rate();
    if (r === undefined || !this.last) return undefined;
    return Math.max(0, total - this.last.bytes) / r;
  }
}

/** `rate · ETA` text, empty parts left out before a measurement. */
function rateText(t: Throughput, total: number): string {
  const r = t.rate();
  const eta = t.eta(total);
  if (r === undefined || eta === undefined) return '';
  return ` · ${formatBytes(r)}/s · ETA ${formatDuration(eta)}`;
}

/**
 * Lines drawn at the bottom of a terminal and redrawn in place (cursor up, clear to the end of the
 * screen), at most once per interval; the latest state is drawn when the interval has passed. Lines are
 * cut to the terminal width, since a wrapped line would break the cursor-up count.
 */
export class LiveLines {
  private drawn = 0;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private lines: () => string[] = () => [];
  private readonly now: () => number;
  private readonly interval: number;

  constructor(
    private readonly stream: ProgressStream,
    options: Pick<DisplayOptions, 'now' | 'intervalMs'> = {},
  ) {
    this.now = options.now ?? (() => performance.now());
    this.interval = options.intervalMs ?? REDRAW_INTERVAL_MS;
  }

  /** New content: drawn now if the interval has passed, else once it has. */
  set(lines: () => string[]): void {
    this.lines = lines;
    const wait = this.lastDraw + this.interval - this.now();
    if (wait <= 0) this.draw();
    else this.timer ??= setTimeout(() => this.draw(), wait).unref();
  }

  private draw(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.lastDraw = this.now();
    const width = Math.max(20, (this.stream.columns || 100) - 1);
    const lines = this.lines().map((l) => (l.length > width ? l.slice(0, width - 1) + '…' : l));
    this.stream.write(this.clearText() + lines.map((l) => l + '\n').join(''));
    this.drawn = lines.length;
  }

  private clearText(): string {
    return this.drawn > 0 ? `\x1b[${this.drawn}A\x1b[0J` : '';
  }

  /** Removes the lines (the command's summary follows). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.drawn > 0) this.stream.write(this.clearText());
    this.drawn = 0;
  }
}

function bar(fraction: number, size = 16): string {
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * size);
  return `[${'#'.repeat(full)}${'-'.repeat(size - full)}]`;
}

/**
 * A locale's bytes done including the share of entries in flight, never going back (an entry whose task
 * ended is counted again once the locale assembles it).
 */
class LocaleBytes {
  private shown = 0;

  of(p: LocaleProgress): number {
    const now = Math.min(p.bytesTotal, p.bytesDone + p.workBytesDone);
    this.shown = Math.max(this.shown, now);
    return this.shown;
  }
}

function counts(p: Pick<LocaleProgress, 'hits' | 'misses'>): string {
  return `hits ${p.hits} signed ${p.misses}`;
}

/** One locale: stage, bar, bytes done/total, measured rate and ETA, entries, hits/signed/passthrough. */
export function localeProgress(
  enabled: boolean,
  label: string,
  options: DisplayOptions = {},
): ProgressDisplay<LocaleProgress> {
  if (!enabled) return NOOP;
  const live = new LiveLines(options.stream ?? process.stderr, options);
  const now = options.now ?? (() => performance.now());
  const bytes = new LocaleBytes();
  const speed = new Throughput();
  return {
    update(p) {
      const done = bytes.of(p);
      // Measured from when signing starts: reading and planning are not the per-byte work left.
      if (p.stage !== 'planning') speed.sample(now(), done);
      const frac = p.bytesTotal > 0 ? done / p.bytesTotal : 0;
      const line =
        p.stage === 'planning'
          ? `${label} planning…`
          : `${label} ${bar(frac)} ${Math.floor(frac * 100)}% ${formatBytes(done)}/${formatBytes(p.bytesTotal)}` +
            `${rateText(speed, p.bytesTotal)} · ${p.entriesDone}/${p.entriesTotal} entries, ${counts(p)} passthrough ${p.passthrough}` +
            (p.stage === 'signing' ? '' : ` · ${p.stage}`);
      live.set(() => [line]);
    },
    stop() {
      live.stop();
    },
  };
}

/**
 * sign-release: an overall line (locales done/total, bytes, measured rate and ETA over the release's
 * input bytes) and one line per running locale (stage, bytes, entries, hits/signed).
 */
export function releaseProgress(
  enabled: boolean,
  localesTotal: number,
  options: DisplayOptions = {},
): ProgressDisplay<ReleaseProgress> {
  if (!enabled) return NOOP;
  const live = new LiveLines(options.stream ?? process.stderr, options);
  const now = options.now ?? (() => performance.now());
  const perLocale = new Map<string, LocaleBytes>();
  const speed = new Throughput();
  speed.begin(now());
  return {
    update(p) {
      const running = Object.entries(p.current);
      const width = Math.max(6, ...running.map(([l]) => Math.min(12, l.length)));
      let inFlight = 0;
      const lines = running.map(([locale, lp]) => {
        let b = perLocale.get(locale);
        if (!b) perLocale.set(locale, (b = new LocaleBytes()));
        const done = b.of(lp);
        inFlight += done;
        const bytes = lp.stage === 'planning' ? '' : ` ${formatBytes(done)}/${formatBytes(lp.bytesTotal)}`;
        return `  ${locale.slice(0, 12).padEnd(width)} ${lp.stage.padEnd(8)}${bytes} · ${lp.entriesDone}/${lp.entriesTotal} entries · ${counts(lp)}`;
      });
      for (const l of perLocale.keys()) if (!(l in p.current)) perLocale.delete(l);
      const total = p.inputBytesTotal;
      const done = Math.min(total, p.inputBytesDone + inFlight);
      speed.sample(now(), done);
      const overall =
        `release ${p.localesDone}/${localesTotal} locales · ${formatBytes(done)}/${formatBytes(total)}` +
        // No entry total here: locales not started yet have not been counted (their bytes have).
        `${rateText(speed, total)} · ${counts(p)}`;
      live.set(() => [overall, ...lines]);
    },
    stop() {
      live.stop();
    },
  };
}
