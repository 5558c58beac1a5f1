import { html, type SafeHtml } from '../html.ts';

/** The windows a chart offers, each with a bucket size that keeps it near 60 to 170 points. */
const WINDOWS = {
  '1h': { ms: 60 * 60 * 1_000, bucketSeconds: 60 },
  '6h': { ms: 6 * 60 * 60 * 1_000, bucketSeconds: 5 * 60 },
  '24h': { ms: 24 * 60 * 60 * 1_000, bucketSeconds: 15 * 60 },
  '7d': { ms: 7 * 24 * 60 * 60 * 1_000, bucketSeconds: 60 * 60 },
} as const;

export type ChartWindowName = keyof typeof WINDOWS;

export interface ChartWindow {
  name: ChartWindowName;
  ms: number;
  bucketSeconds: number;
}

/** The window a query string names; anything else is the default hour. */
export function chartWindow(name: string | null): ChartWindow {
  const key = (name !== null && name in WINDOWS ? name : '1h') as ChartWindowName;
  return { name: key, ...WINDOWS[key] };
}

/** A <select> of the windows, for a GET form. */
export function windowSelect(current: ChartWindow): SafeHtml {
  return html`<label>Window<select name="window">${Object.keys(WINDOWS).map(
    (name) => html`<option${name === current.name ? html` selected` : ''}>${name}</option>`,
  )}</select></label>`;
}

export function formatDuration(milliseconds: number | null): string {
  if (milliseconds === null) return '-';
  if (milliseconds < 1_000) return `${Math.round(milliseconds)} ms`;
  if (milliseconds < 120_000) return `${(milliseconds / 1_000).toFixed(1)} s`;
  if (milliseconds < 2 * 60 * 60 * 1_000) return `${Math.round(milliseconds / 60_000)} min`;
  if (milliseconds < 48 * 60 * 60 * 1_000) return `${(milliseconds / 3_600_000).toFixed(1)} h`;
  return `${(milliseconds / 86_400_000).toFixed(1)} d`;
}

export function formatTime(time: Date | null): string {
  return time === null ? '-' : `${time.toISOString().replace('T', ' ').slice(0, 19)} UTC`;
}
