/**
 * A release's time to completion from measured byte rates: each locale that did work gives bytes done
 * over the time it took (finished ones) or has been running (active ones); their sum over their summed
 * time is the rate of one locale, times the locales running at once. What is left is the bytes not yet
 * done of every unfinished locale (an active one's remaining entry bytes, a queued one's input size).
 * No measurement yet, or a locale whose size is not known: no ETA (null), never a guess.
 */
import type { LocaleStatus } from './types.js';

export interface EtaLocale {
  state: LocaleStatus['state'];
  /** Bytes done so far (completed: all of them). */
  bytesDone: number;
  /** The locale's bytes, when known. */
  bytesTotal: number | undefined;
  /** Milliseconds it ran (completed) or has been running (active); undefined when it has not started. */
  elapsedMs: number | undefined;
}

export function estimateEtaMs(locales: EtaLocale[]): number | null {
  let done = 0;
  let elapsed = 0;
  let remaining = 0;
  let running = 0;
  for (const l of locales) {
    if (l.state === 'failed') continue;
    const ran = l.state === 'completed' || l.state === 'active' || l.state === 'stalled';
    if (ran && l.elapsedMs !== undefined && l.elapsedMs > 0 && l.bytesDone > 0) {
      done += l.bytesDone;
      elapsed += l.elapsedMs;
    }
    if (l.state === 'completed') continue;
    if (l.state === 'active') running++;
    if (l.bytesTotal === undefined) return null;
    // A stalled or retried locale starts over when it runs again.
    remaining += l.state === 'active' ? Math.max(0, l.bytesTotal - l.bytesDone) : l.bytesTotal;
  }
  if (done === 0 || elapsed === 0) return null;
  const perLocale = done / elapsed;
  return Math.round(remaining / (perLocale * Math.max(1, running)));
}
