import type { Session } from '../../internal/session.ts';
import { html, type SafeHtml } from '../html.ts';
import { href, type PageContext } from '../page-layout.ts';
import { eventDetail, type OperatorAction, operatorActions } from '../../ops/dashboard-sql/event-detail.ts';
import { formatTime } from './chart-window.ts';

/** JSON text indented for reading; text that does not parse is shown as stored. */
function pretty(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export function actionTable(actions: readonly OperatorAction[], context: PageContext): SafeHtml {
  if (actions.length === 0) return html`<p class="empty">No operator action recorded.</p>`;
  return html`<table><thead><tr><th>at</th><th>action</th><th>event</th><th>actor</th><th>database login</th><th>detail</th></tr></thead><tbody>
${actions.map(
  (action) =>
    html`<tr><td>${formatTime(action.at)}</td><td>${action.action}</td><td><a href="${href(context, '/event', { tenant: action.tenantId, id: action.eventId })}">${action.tenantId} / ${action.eventId}</a></td><td>${action.actor}</td><td>${action.dbRole}</td><td><code>${JSON.stringify(action.detail)}</code></td></tr>`,
)}
</tbody></table>`;
}

export async function eventPage(session: Session, context: PageContext, tenantId: string, id: string): Promise<SafeHtml | undefined> {
  const event = await eventDetail(session, tenantId, id);
  if (!event) return undefined;
  const actions = await operatorActions(session, { tenantId, id }, 50);
  const row = (label: string, value: unknown) => html`<tr><th>${label}</th><td>${value}</td></tr>`;
  return html`
<table>
${row('tenant', event.tenantId)}${row('id', event.id)}${row('status', event.status)}${row('topic', event.topic)}
${row('dedupe id', event.dedupeId)}${row('ordering key', event.orderingKey ?? '-')}${row('attempts', event.attempts)}
${row('created', formatTime(event.createdAt))}${row('next attempt', event.status === 'pending' ? formatTime(event.nextAttemptAt) : '-')}
${row('locked by', event.lockedBy ?? '-')}${row('delivered', formatTime(event.deliveredAt))}
</table>
${
  event.status === 'dead' && !context.readOnly
    ? html`<p><a href="${href(context, '/dead/confirm', { action: 'requeue', id: event.id })}">Requeue…</a> · <a href="${href(context, '/dead/confirm', { action: 'discard', id: event.id })}">Discard…</a></p>`
    : ''
}
<h2>Last error</h2>
<pre class="error" id="last-error">${event.lastError ?? '-'}</pre>
<h2>Payload</h2>
<pre id="payload">${pretty(event.payload)}</pre>
<h2>Headers</h2>
<pre id="headers">${event.headers}</pre>
<h2>Operator actions</h2>
${actionTable(actions, context)}`;
}
