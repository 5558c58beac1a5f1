/**
 * A line chart as inline SVG, written on the server: no chart library, nothing fetched, nothing
 * run in the browser, and it prints. Each point carries a <title>, which browsers show as a
 * tooltip. Values are numbers the dashboard computed; series names are escaped all the same.
 */
import { html, type SafeHtml } from './html.ts';

export interface ChartPoint {
  at: Date;
  value: number;
}

export interface ChartSeries {
  name: string;
  /** In time order. A series with gaps (no latency where nothing was delivered) has no point there. */
  points: readonly ChartPoint[];
}

export interface LineChartInput {
  /** Accessible name of the chart. */
  title: string;
  /** The time axis: the whole window, whatever the data covers, so an idle hour looks idle. */
  from: Date;
  to: Date;
  series: readonly ChartSeries[];
  /** Formats a value for the axis and tooltips (e.g. '12 ms'). */
  format: (value: number) => string;
}

const WIDTH = 720;
const HEIGHT = 220;
const LEFT = 64;
const RIGHT = 12;
const TOP = 12;
const BOTTOM = 28;
/** Colours told apart by people with the common colour-vision deficiencies (Okabe-Ito). */
export const CHART_COLOURS = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#d55e00', '#56b4e9'];

/** A tick step of 1, 2 or 5 times a power of ten, so four or five ticks cover `max`. */
function tickStep(max: number): number {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((factor) => factor * power).find((step) => step >= raw)!;
}

export function lineChart(input: LineChartInput): SafeHtml {
  const points = input.series.flatMap((s) => s.points);
  if (points.length === 0) return html`<p class="empty">No data in this window.</p>`;
  const step = tickStep(Math.max(1, ...points.map((point) => point.value)));
  const ticks = Array.from({ length: Math.ceil(Math.max(1, ...points.map((point) => point.value)) / step) + 1 }, (_, i) => i * step);
  const top = ticks[ticks.length - 1]!;
  const start = input.from.getTime();
  const span = Math.max(1, input.to.getTime() - start);
  const x = (time: Date) => (LEFT + ((time.getTime() - start) / span) * (WIDTH - LEFT - RIGHT)).toFixed(1);
  const y = (value: number) => (TOP + (1 - value / top) * (HEIGHT - TOP - BOTTOM)).toFixed(1);
  const clock = (time: Date) => time.toISOString().slice(5, 16).replace('T', ' ');
  return html`<figure class="chart">
<svg viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${input.title}" xmlns="http://www.w3.org/2000/svg">
${ticks.map(
  (tick) => html`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(tick)}" y2="${y(tick)}" stroke="#ddd"/>
<text x="${LEFT - 6}" y="${(Number(y(tick)) + 4).toFixed(1)}" text-anchor="end" font-size="11" fill="#555">${input.format(tick)}</text>`,
)}
<text x="${LEFT}" y="${HEIGHT - 8}" font-size="11" fill="#555">${clock(input.from)} UTC</text>
<text x="${WIDTH - RIGHT}" y="${HEIGHT - 8}" text-anchor="end" font-size="11" fill="#555">${clock(input.to)} UTC</text>
${input.series.map((s, index) => {
  const colour = CHART_COLOURS[index % CHART_COLOURS.length]!;
  return html`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${s.points.map((point) => `${x(point.at)},${y(point.value)}`).join(' ')}"/>
${s.points.map(
  (point) =>
    // Zeros are drawn by the line alone: sixty dots on the floor of a quiet hour hide the rest.
    point.value !== 0 &&
    html`<circle cx="${x(point.at)}" cy="${y(point.value)}" r="2.5" fill="${colour}"><title>${s.name} at ${clock(point.at)}: ${input.format(point.value)}</title></circle>`,
)}`;
})}
</svg>
<figcaption>${input.series.map((s, index) => html`<span class="key"><span class="swatch" data-colour="${index % CHART_COLOURS.length}"></span>${s.name}</span> `)}</figcaption>
</figure>`;
}

/**
 * Counts per bucket over the whole window, zero where the data has no row: a count chart whose
 * line skipped quiet minutes would draw traffic that never happened.
 */
export function filledBuckets<T extends { at: Date }>(
  rows: readonly T[],
  from: Date,
  to: Date,
  bucketSeconds: number,
  value: (row: T | undefined) => number,
): ChartPoint[] {
  const bucketMs = bucketSeconds * 1_000;
  const byTime = new Map(rows.map((row) => [row.at.getTime(), row]));
  const points: ChartPoint[] = [];
  for (let time = Math.floor(from.getTime() / bucketMs) * bucketMs; time <= to.getTime(); time += bucketMs) {
    points.push({ at: new Date(time), value: value(byTime.get(time)) });
  }
  return points;
}
