import type { Session } from '../../internal/session.ts';
import { html, type SafeHtml } from '../html.ts';
import { href, type PageContext } from '../page-layout.ts';
import { keyLookup } from '../../ops/dashboard-sql/key-lookup.ts';
import { formatTime } from './chart-window.ts';

export async function keyPage(session: Session, context: PageContext, tenantId: string, key: string): Promise<SafeHtml> {
  const found = await keyLookup(session, tenantId, key);
  return html`
<p>Tenant <b>${tenantId}</b>, key <code>${key}</code> · <a href="${href(context, '/idempotency', { tenant: tenantId })}">tenant's calls</a></p>
<h2>Records</h2>
${
  found.states.length === 0
    ? html`<p class="empty">No record: never called, or expired and swept.</p>`
    : html`<table><thead><tr><th>version</th><th>tool</th><th>state</th><th>lease until</th><th>created</th><th>expires</th>${found.previews ? html`<th>result</th>` : ''}</tr></thead><tbody>
${found.states.map(
  (state) =>
    html`<tr><td>${state.version || "''"}</td><td>${state.tool ?? '-'}</td><td>${state.status}</td><td>${formatTime(state.lockedUntil)}</td><td>${formatTime(state.createdAt)}</td><td>${formatTime(state.expiresAt)}</td>${found.previews ? html`<td><pre class="preview">${state.preview ?? '-'}</pre></td>` : ''}</tr>`,
)}
</tbody></table>`
}
${
  found.previews
    ? ''
    : html`<p class="empty">Results are not shown: they are the tenant's data, and the dashboard's login holds the relay role only. Grant it the application role as well to preview them.</p>`
}
<h2>Audit trail (newest first)</h2>
${
  found.audit.length === 0
    ? html`<p class="empty">No replay, wait or rejection recorded for this key.</p>`
    : html`<table><thead><tr><th>at</th><th>kind</th><th>tool</th><th>detail</th></tr></thead><tbody>
${found.audit.map((row) => html`<tr><td>${formatTime(row.at)}</td><td>${row.kind}</td><td>${row.tool ?? '-'}</td><td><code>${JSON.stringify(row.detail)}</code></td></tr>`)}
</tbody></table>`
}`;
}
