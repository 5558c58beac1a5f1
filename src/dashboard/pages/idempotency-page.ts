import type { Session } from '../../internal/session.ts';
import { html, type SafeHtml } from '../html.ts';
import { filledBuckets, lineChart } from '../line-chart.ts';
import { href, type PageContext } from '../page-layout.ts';
import { idempotencySeries, type OutcomeBucket, type OutcomeFilter, outcomesByTenantTool } from '../../ops/dashboard-sql/idempotency-series.ts';
import { chartWindow, windowSelect } from './chart-window.ts';

export async function idempotencyPage(session: Session, context: PageContext, query: URLSearchParams, pageSize: number): Promise<SafeHtml> {
  const window = chartWindow(query.get('window'));
  const filter: OutcomeFilter = {};
  const tenant = query.get('tenant')?.trim();
  const tool = query.get('tool')?.trim();
  if (tenant) filter.tenant = tenant;
  if (tool) filter.tool = tool;
  const series = await idempotencySeries(session, window.ms, window.bucketSeconds, filter);
  const rows = await outcomesByTenantTool(session, window.ms, filter, pageSize);
  const to = new Date();
  const from = new Date(to.getTime() - window.ms);
  const line = (name: string, value: (bucket: OutcomeBucket) => number) => ({
    name,
    points: filledBuckets(series, from, to, window.bucketSeconds, (bucket) => (bucket ? value(bucket) : 0)),
  });
  return html`
<form class="filters" method="get" action="${href(context, '/idempotency')}">
<label>Tenant<input name="tenant" value="${filter.tenant ?? ''}"></label>
<label>Tool<input name="tool" value="${filter.tool ?? ''}"></label>
${windowSelect(window)}<button>Show</button>
</form>
<h2>Calls per ${window.bucketSeconds >= 3600 ? 'hour' : `${window.bucketSeconds / 60} min`}</h2>
${lineChart({
  title: 'Idempotent calls by outcome',
  from,
  to,
  series:
    series.length === 0
      ? []
      : [
          line('executed', (b) => b.executed),
          line('replayed', (b) => b.replayed),
          line('waited', (b) => b.waited),
          line('rejected', (b) => b.rejected),
          line('rate-limited', (b) => b.rateLimited),
        ],
  format: (value) => String(value),
})}
<h2>By tenant and tool (${window.name}, busiest first)</h2>
${
  rows.length === 0
    ? html`<p class="empty">No calls in this window.</p>`
    : html`<table><thead><tr><th>tenant</th><th>tool</th><th class="n">executed</th><th class="n">replayed</th><th class="n">waited</th><th class="n">rejected</th><th class="n">rate-limited</th></tr></thead><tbody>
${rows.map(
  (row) =>
    html`<tr><td><a href="${href(context, '/idempotency', { tenant: row.tenantId, window: window.name })}">${row.tenantId}</a></td><td>${row.tool || '-'}</td><td class="n">${row.executed}</td><td class="n">${row.replayed}</td><td class="n">${row.waited}</td><td class="n">${row.rejected}</td><td class="n">${row.rateLimited}</td></tr>`,
)}
</tbody></table>`
}
<h2>Look up a key</h2>
<form class="filters" method="get" action="${href(context, '/idempotency/key')}">
<label>Tenant<input name="tenant" required value="${filter.tenant ?? ''}"></label>
<label>Key<input name="key" required></label>
<button>Look up</button>
</form>`;
}
