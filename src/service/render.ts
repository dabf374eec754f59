/** Human renderings of release status for `marsign status` and `marsign enqueue --wait`. */
import type { WorkerHeartbeat } from '../queue/heartbeat.js';
import type { ReleaseStatus } from '../queue/types.js';

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

function pct(x: number | null): string {
  return x === null ? '–' : `${(100 * x).toFixed(1)}%`;
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** One line per release. */
export function renderReleaseList(list: ReleaseStatus[]): string {
  if (list.length === 0) return 'No releases.';
  const rows = [['RELEASE', 'STATE', 'LOCALES', 'FAILED', 'ENTRIES', 'HIT RATE', 'TIME', 'ETA']];
  for (const r of list) {
    const t = r.totals;
    rows.push([
      r.release,
      r.state,
      `${t.completed}/${t.locales}`,
      String(t.failed),
      `${t.entriesDone}/${t.entriesTotal}`,
      pct(t.hitRate),
      duration(r.durationMs),
      r.state !== 'running' ? '' : r.etaMs === null ? '—' : duration(r.etaMs),
    ]);
  }
  return table(rows);
}

/** One line per worker heard from lately: its last heartbeat and whether it is still beating. */
export function renderWorkers(workers: WorkerHeartbeat[]): string {
  if (workers.length === 0) return 'No workers.';
  const rows = [['WORKER', 'STATE', 'LAST BEAT', 'HOST', 'PID', 'THREADS', 'UTILISATION', 'ACTIVE']];
  for (const w of workers) {
    rows.push([
      w.id,
      w.state,
      `${duration(w.ageMs)} ago`,
      w.host,
      String(w.pid),
      String(w.threads),
      pct(w.utilisation),
      w.active.join(' '),
    ]);
  }
  return table(rows);
}

/** The worker running (or that ran) a locale; for a running one, how long ago it last beat. */
function workerCell(l: ReleaseStatus['locales'][number]): string {
  if (!l.worker) return '';
  return l.workerSeenMs !== undefined ? `${l.worker} (beat ${duration(l.workerSeenMs)} ago)` : l.worker;
}

/** A release with its locales and their errors. */
export function renderRelease(r: ReleaseStatus): string {
  const t = r.totals;
  const head = [
    `release ${r.release} (profile ${r.profile}${r.client ? `, by ${r.client}` : ''}): ${r.state}`,
    `  ${t.completed}/${t.locales} locales done, ${t.failed} failed, ${t.active} active; ` +
      `entries ${t.entriesDone}/${t.entriesTotal}; cache hits ${t.hits}, misses ${t.misses} (hit rate ${pct(t.hitRate)})` +
      (r.durationMs ? `; took ${duration(r.durationMs)}` : '') +
      (r.state === 'running' ? `; ETA ${r.etaMs === null ? '—' : duration(r.etaMs)}` : ''),
  ];
  if (r.error) head.push(`  error: ${r.error.code}: ${r.error.message}`);
  const rows = [['LOCALE', 'STATE', 'PROGRESS', 'HITS', 'MISSES', 'TRIES', 'TIME', 'WORKER', 'ERROR']];
  for (const l of r.locales) {
    const p = l.progress;
    const done = l.result?.entries ?? p.entriesDone ?? 0;
    const total = l.result?.entries ?? p.entriesTotal ?? 0;
    rows.push([
      l.locale,
      l.state,
      total ? `${done}/${total}` : '',
      String(l.result?.hits ?? p.hits ?? 0),
      String(l.result?.misses ?? p.misses ?? 0),
      String(l.attempts),
      duration(l.durationMs),
      workerCell(l),
      l.error ? `${l.error.code}: ${l.error.message.split('\n')[0]}` : '',
    ]);
  }
  return head.join('\n') + '\n' + table(rows);
}
