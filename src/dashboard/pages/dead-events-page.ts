import type { Session } from '../../internal/session.ts';
import { html, type SafeHtml } from '../html.ts';
import { href, type PageContext } from '../page-layout.ts';
import { deadEventList, type DeadEventFilter, type DeadEventRow } from '../../ops/dashboard-sql/dead-event-list.ts';
import { formatTime } from './chart-window.ts';

/** Ids as the outbox hands them out: positive bigints. */
export const EVENT_ID = /^\d{1,19}$/;

export function deadEventFilter(query: URLSearchParams): DeadEventFilter {
  const filter: DeadEventFilter = {};
  for (const field of ['tenant', 'topic', 'error'] as const) {
    const value = query.get(field)?.trim();
    if (value) filter[field] = value.slice(0, 1_000);
  }
  return filter;
}

export function deadEventTable(context: PageContext, events: readonly DeadEventRow[], selectable: boolean): SafeHtml {
  return html`<table><thead><tr>${selectable ? html`<th><input type="checkbox" data-select-all aria-label="select all"></th>` : ''}<th class="n">id</th><th>tenant</th><th>topic</th><th class="n">attempts</th><th>last error</th><th>created</th></tr></thead><tbody>
${events.map(
  (event) =>
    html`<tr>${selectable ? html`<td><input type="checkbox" name="id" value="${event.id}" aria-label="select ${event.id}"></td>` : ''}<td class="n"><a href="${href(context, '/event', { tenant: event.tenantId, id: event.id })}">${event.id}</a></td><td>${event.tenantId}</td><td>${event.topic}</td><td class="n">${event.attempts}</td><td class="error">${event.lastError ?? ''}</td><td>${formatTime(event.createdAt)}</td></tr>`,
)}
</tbody></table>`;
}

export async function deadEventsPage(session: Session, context: PageContext, query: URLSearchParams, pageSize: number): Promise<SafeHtml> {
  const filter = deadEventFilter(query);
  const before = query.get('before');
  const events = await deadEventList(session, filter, { ...(before && EVENT_ID.test(before) ? { before } : {}), limit: pageSize });
  const done = query.get('done');
  const count = Number(query.get('count') ?? '0');
  const last = events[events.length - 1];
  return html`
${
  done === 'requeue' || done === 'discard'
    ? html`<p class="notice" role="status">${done === 'requeue' ? 'Requeued' : 'Discarded'} ${Number.isSafeInteger(count) ? count : 0} event(s).</p>`
    : ''
}
<form class="filters" method="get" action="${href(context, '/dead')}">
<label>Tenant<input name="tenant" value="${filter.tenant ?? ''}"></label>
<label>Topic<input name="topic" value="${filter.topic ?? ''}"></label>
<label>Error contains<input name="error" value="${filter.error ?? ''}"></label>
<button>Filter</button> <a href="${href(context, '/dead')}">clear</a>
</form>
${
  events.length === 0
    ? html`<p class="empty">No dead events${filter.tenant || filter.topic || filter.error ? ' match' : ''}.</p>`
    : context.readOnly
      ? deadEventTable(context, events, false)
      : html`<form method="get" action="${href(context, '/dead/confirm')}">
${deadEventTable(context, events, true)}
<button name="action" value="requeue">Requeue selected…</button> <button name="action" value="discard">Discard selected…</button>
</form>`
}
<nav class="pages">${before ? html`<a href="${href(context, '/dead', { ...filter })}">newest</a> ` : ''}${last && events.length === pageSize ? html`<a rel="next" href="${href(context, '/dead', { ...filter, before: last.id })}">older</a>` : ''}</nav>`;
}
