import type { Session } from '../../internal/session.ts';
import { html, type SafeHtml } from '../html.ts';
import { csrfField, href, type PageContext } from '../page-layout.ts';
import { deadEventsByIds } from '../../ops/dashboard-sql/dead-event-list.ts';
import { deadEventTable } from './dead-events-page.ts';

/**
 * The confirmation of a requeue or a discard: a GET that only shows the events still dead among
 * those selected, and the one form that posts the action (with its CSRF token).
 */
export async function confirmPage(session: Session, context: PageContext, action: 'requeue' | 'discard', ids: readonly string[]): Promise<SafeHtml> {
  const events = ids.length === 0 ? [] : await deadEventsByIds(session, ids);
  if (events.length === 0)
    return html`<p class="empty">None of the selected events is dead any more.</p><p><a href="${href(context, '/dead')}">Back to dead events</a></p>`;
  return html`
<p class="${action === 'discard' ? 'danger' : 'notice'}">${
    action === 'requeue'
      ? html`Requeue ${events.length} event(s)? Each goes back to pending with a fresh attempt budget, and the relays deliver it again under the same dedupe id.`
      : html`Discard ${events.length} event(s)? Each is deleted from the outbox and never delivered; an audit row keeps its id, topic and dedupe id, not its payload.`
  }</p>
${deadEventTable(context, events, false)}
<form method="post" action="${href(context, `/dead/${action}`)}">
${csrfField(context)}
${events.map((event) => html`<input type="hidden" name="id" value="${event.id}">`)}
<button id="confirm" class="${action}">${action === 'requeue' ? 'Requeue' : 'Discard'} ${events.length} event(s)</button>
<a href="${href(context, '/dead')}">Cancel</a>
</form>`;
}
