import type { Session } from '../../internal/session.ts';
import { lastSweep, nextSweepAt } from '../../ops/sweep-schedule.ts';
import { html, type SafeHtml } from '../html.ts';
import { filledBuckets, lineChart } from '../line-chart.ts';
import { href, type PageContext } from '../page-layout.ts';
import { deliverySeries } from '../../ops/dashboard-sql/delivery-series.ts';
import { overviewCounts } from '../../ops/dashboard-sql/overview-counts.ts';
import { recentRelays } from '../../ops/dashboard-sql/recent-relays.ts';
import { chartWindow, formatDuration, formatTime, windowSelect } from './chart-window.ts';

/** Relays that renewed their row this recently count as running (they renew every 30 s). */
const RELAY_SEEN_WITHIN_MILLISECONDS = 10 * 60 * 1_000;

export async function overviewPage(session: Session, context: PageContext, query: URLSearchParams, sweepSchedule: string): Promise<SafeHtml> {
  const window = chartWindow(query.get('window'));
  const counts = await overviewCounts(session);
  const series = await deliverySeries(session, window.ms, window.bucketSeconds);
  const relays = await recentRelays(session, RELAY_SEEN_WITHIN_MILLISECONDS);
  const sweep = await lastSweep(session);
  const lastSweepAt = 'lastRunAt' in sweep ? sweep.lastRunAt : null;
  const nextSweep = nextSweepAt(sweepSchedule) ?? null;
  // The window's average: a single minute's count jumps with every batch the relay claims.
  const delivered = series.reduce((sum, bucket) => sum + bucket.delivered, 0);
  const perMinute = delivered / (window.ms / 60_000);
  const to = new Date();
  const from = new Date(to.getTime() - window.ms);
  return html`
<div class="cards">
  <div class="card${counts.pending > 0 ? ' warn' : ''}"><span>Pending</span><b id="pending">${counts.pending}</b><a href="${href(context, '/backlog')}">backlog</a></div>
  <div class="card"><span>Oldest pending</span><b>${formatDuration(counts.oldestPendingAgeMs)}</b></div>
  <div class="card"><span>Deliveries / min (${window.name})</span><b>${perMinute.toFixed(1)}</b></div>
  <div class="card${counts.dead > 0 ? ' warn' : ''}"><span>Dead</span><b id="dead">${counts.dead}</b><a href="${href(context, '/dead')}">list</a></div>
  <div class="card"><span>Last sweep</span><b>${lastSweepAt ? `${formatDuration(Date.now() - lastSweepAt.getTime())} ago` : 'never'}</b>${formatTime(lastSweepAt)}</div>
  <div class="card"><span>Next sweep (${sweepSchedule})</span><b>${nextSweep ? `in ${formatDuration(nextSweep.getTime() - Date.now())}` : '-'}</b>${formatTime(nextSweep)}</div>
</div>
<p><label class="inline"><input type="checkbox" id="auto-refresh"> refresh every 10 s</label></p>
<form class="filters" method="get" action="${href(context, '/')}">${windowSelect(window)}<button>Show</button></form>
<h2>Commit-to-delivery latency</h2>
${lineChart({
  title: 'Commit-to-delivery latency, median and 95th percentile',
  from,
  to,
  series: [
    { name: 'p50', points: series.map((bucket) => ({ at: bucket.at, value: bucket.p50Ms })) },
    { name: 'p95', points: series.map((bucket) => ({ at: bucket.at, value: bucket.p95Ms })) },
  ],
  format: (value) => formatDuration(value),
})}
<h2>Deliveries per ${window.bucketSeconds >= 3600 ? 'hour' : window.bucketSeconds >= 60 ? `${window.bucketSeconds / 60} min` : 'bucket'}</h2>
${lineChart({
  title: 'Deliveries',
  from,
  to,
  series: [{ name: 'delivered', points: filledBuckets(series, from, to, window.bucketSeconds, (bucket) => bucket?.delivered ?? 0) }],
  format: (value) => String(value),
})}
<h2>Relays seen in the last ${formatDuration(RELAY_SEEN_WITHIN_MILLISECONDS)}</h2>
${
  relays.length === 0
    ? html`<p class="empty">No relay seen: nothing is delivering events.</p>`
    : html`<table><thead><tr><th>relay</th><th>host</th><th class="n">pid</th><th>started</th><th>seen</th><th>stopped</th></tr></thead><tbody>
${relays.map((relay) => html`<tr><td>${relay.relayId}</td><td>${relay.host}</td><td class="n">${relay.pid}</td><td>${formatTime(relay.startedAt)}</td><td>${formatDuration(Date.now() - relay.seenAt.getTime())} ago</td><td>${formatTime(relay.stoppedAt)}</td></tr>`)}
</tbody></table>`
}`;
}
