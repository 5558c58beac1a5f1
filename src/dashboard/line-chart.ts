/**
 * A line chart as inline SVG, written on the server: no chart library, nothing fetched, nothing
 * run in the browser, and it prints. Each point carries a <title>, which browsers show as a
 * tooltip. Values are numbers the dashboard computed; series names are escaped all the same.
 */
import { html, type SafeHtml } from './html.ts';

export interface ChartSeries {
  name: string;
  /** One value per entry of `times`. */
  values: readonly number[];
}

export interface LineChartInput {
  /** Accessible name of the chart. */
  title: string;
  times: readonly Date[];
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
const COLOURS = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#d55e00', '#56b4e9'];

export function lineChart(input: LineChartInput): SafeHtml {
  const { times, series } = input;
  if (times.length === 0) return html`<p class="empty">No data in this window.</p>`;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const start = times[0]!.getTime();
  const span = Math.max(1, times[times.length - 1]!.getTime() - start);
  const x = (time: Date) => LEFT + ((time.getTime() - start) / span) * (WIDTH - LEFT - RIGHT);
  const y = (value: number) => TOP + (1 - value / max) * (HEIGHT - TOP - BOTTOM);
  const clock = (time: Date) => time.toISOString().slice(11, 16);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((fraction) => max * fraction);
  return html`<figure class="chart">
<svg viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${input.title}" xmlns="http://www.w3.org/2000/svg">
${ticks.map(
  (tick) => html`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(tick).toFixed(1)}" y2="${y(tick).toFixed(1)}" stroke="#ddd"/>
<text x="${LEFT - 6}" y="${(y(tick) + 4).toFixed(1)}" text-anchor="end" font-size="11" fill="#555">${input.format(tick)}</text>`,
)}
<text x="${LEFT}" y="${HEIGHT - 8}" font-size="11" fill="#555">${clock(times[0]!)} UTC</text>
<text x="${WIDTH - RIGHT}" y="${HEIGHT - 8}" text-anchor="end" font-size="11" fill="#555">${clock(times[times.length - 1]!)} UTC</text>
${series.map((s, index) => {
  const colour = COLOURS[index % COLOURS.length]!;
  const points = s.values.map((value, i) => `${x(times[i]!).toFixed(1)},${y(value).toFixed(1)}`).join(' ');
  return html`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${points}"/>
${s.values.map(
  (value, i) =>
    html`<circle cx="${x(times[i]!).toFixed(1)}" cy="${y(value).toFixed(1)}" r="2.5" fill="${colour}"><title>${s.name} at ${clock(times[i]!)}: ${input.format(value)}</title></circle>`,
)}`;
})}
</svg>
<figcaption>${series.map((s, index) => html`<span class="key"><span class="swatch" data-colour="${index % COLOURS.length}"></span>${s.name}</span> `)}</figcaption>
</figure>`;
}
