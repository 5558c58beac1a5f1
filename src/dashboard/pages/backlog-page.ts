import type { Session } from '../../internal/session.ts';
import { html, type SafeHtml } from '../html.ts';
import { href, type PageContext } from '../page-layout.ts';
import { backlogByTenant, type BacklogCursor } from '../../ops/dashboard-sql/backlog-by-tenant.ts';
import { backlogByTopic } from '../../ops/dashboard-sql/backlog-by-topic.ts';
import { formatDuration } from './chart-window.ts';

export async function backlogPage(session: Session, context: PageContext, query: URLSearchParams, pageSize: number): Promise<SafeHtml> {
  const order = query.get('order') === 'name' ? 'name' : 'size';
  const afterTenant = query.get('after');
  const afterPending = Number(query.get('afterPending') ?? '0');
  const after: BacklogCursor | undefined = afterTenant ? { tenantId: afterTenant, pending: Number.isSafeInteger(afterPending) ? afterPending : 0 } : undefined;
  const tenants = await backlogByTenant(session, { order, ...(after ? { after } : {}), limit: pageSize });
  const topics = afterTenant ? [] : await backlogByTopic(session, pageSize);
  const last = tenants[tenants.length - 1];
  const next = last && tenants.length === pageSize ? href(context, '/backlog', { order, after: last.tenantId, afterPending: String(last.pending) }) : undefined;
  return html`
<h2>By tenant</h2>
<p>Order: ${order === 'size' ? html`<b>largest first</b> · <a href="${href(context, '/backlog', { order: 'name' })}">by name</a>` : html`<a href="${href(context, '/backlog')}">largest first</a> · <b>by name</b>`}</p>
${
  tenants.length === 0
    ? html`<p class="empty">Nothing pending.</p>`
    : html`<table><thead><tr><th>tenant</th><th class="n">pending</th><th class="n">oldest</th><th></th></tr></thead><tbody>
${tenants.map((t) => html`<tr><td>${t.tenantId}</td><td class="n">${t.pending}</td><td class="n">${formatDuration(t.oldestAgeMs)}</td><td><a href="${href(context, '/dead', { tenant: t.tenantId })}">dead events</a></td></tr>`)}
</tbody></table>`
}
<nav class="pages">${afterTenant ? html`<a href="${href(context, '/backlog', { order })}">first page</a> ` : ''}${next ? html`<a rel="next" href="${next}">next page</a>` : ''}</nav>
${
  afterTenant
    ? ''
    : html`<h2>By topic</h2>
${
  topics.length === 0
    ? html`<p class="empty">Nothing pending.</p>`
    : html`<table><thead><tr><th>topic</th><th class="n">pending</th><th class="n">tenants</th><th class="n">oldest</th></tr></thead><tbody>
${topics.map((t) => html`<tr><td>${t.topic}</td><td class="n">${t.pending}</td><td class="n">${t.tenants}</td><td class="n">${formatDuration(t.oldestAgeMs)}</td></tr>`)}
</tbody></table>`
}`
}`;
}
