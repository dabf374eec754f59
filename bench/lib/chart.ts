/**
 * A small SVG writer for horizontal bar charts with a logarithmic time axis (the benchmark's times
 * span from a fraction of a second to many minutes). No dependencies; deterministic output.
 */

export type BarKind = 'pipeline' | 'baseline' | 'floor';

export interface Bar {
  label: string;
  seconds: number;
  kind: BarKind;
  /** Shown after the value, e.g. "extrapolated" or "0.9× floor". */
  note?: string;
}

const COLORS: Record<BarKind, string> = { pipeline: '#2b6cb0', baseline: '#c05621', floor: '#718096' };
const LEGEND: Record<BarKind, string> = {
  pipeline: 'marsign sign-release / sign-locale',
  baseline: 'old scripts (spawn per file)',
  floor: 'floor',
};

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function formatSeconds(s: number): string {
  if (s >= 100) return `${s.toFixed(0)} s`;
  if (s >= 10) return `${s.toFixed(1)} s`;
  if (s >= 1) return `${s.toFixed(2)} s`;
  return `${(s * 1000).toFixed(0)} ms`;
}

/** Axis tick text: 1 ms, 20 ms, 1 s, 500 s (no decimals). */
function tick(s: number): string {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${Math.round(s)} s`;
}

/** Horizontal bars on a log10 axis of seconds. */
export function barChartSvg(title: string, bars: Bar[], subtitle = ''): string {
  const width = 900;
  const labelW = 300;
  const valueW = 190;
  const rowH = 26;
  const top = subtitle ? 62 : 44;
  const plotW = width - labelW - valueW - 20;
  const positive = bars.map((b) => b.seconds).filter((s) => s > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...positive, 1))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...positive, 1) * 1.0001)));
  const x = (s: number): number =>
    labelW + (plotW * (Math.log10(Math.max(s, lo)) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo));
  const height = top + bars.length * rowH + 70;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="24" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
  );
  if (subtitle) out.push(`<text x="10" y="44" fill="#4a5568">${escapeXml(subtitle)}</text>`);
  const plotBottom = top + bars.length * rowH;
  // Gridlines at 1, 2, 5 × each decade; the 2 and 5 labelled only when few decades are shown.
  const labelMinor = Math.log10(hi / lo) <= 3;
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi * 1.0001) break;
      const gx = x(v).toFixed(1);
      out.push(
        `<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${plotBottom}" stroke="${m === 1 ? '#cbd5e0' : '#edf2f7'}"/>`,
      );
      if (m === 1 || labelMinor)
        out.push(
          `<text x="${gx}" y="${plotBottom + 16}" text-anchor="middle" fill="#4a5568" font-size="${m === 1 ? 11 : 9}">${escapeXml(tick(v))}</text>`,
        );
    }
  }
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const w = Math.max(1, x(b.seconds) - labelW);
    out.push(
      `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end">${escapeXml(b.label)}</text>`,
      `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${COLORS[b.kind]}"/>`,
      `<text x="${(labelW + w + 6).toFixed(1)}" y="${y + 17}">${escapeXml(formatSeconds(b.seconds) + (b.note ? ` (${b.note})` : ''))}</text>`,
    );
  });
  out.push(
    `<text x="${labelW + plotW / 2}" y="${plotBottom + 34}" text-anchor="middle" fill="#4a5568">wall time, log scale (shorter is faster)</text>`,
  );
  (Object.keys(COLORS) as BarKind[]).forEach((k, i) => {
    const lx = 10 + i * 280;
    out.push(
      `<rect x="${lx}" y="${plotBottom + 46}" width="12" height="12" fill="${COLORS[k]}"/>`,
      `<text x="${lx + 18}" y="${plotBottom + 56}">${escapeXml(LEGEND[k])}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
