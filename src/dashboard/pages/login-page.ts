import { html, type SafeHtml } from '../html.ts';
import { href, type PageContext } from '../page-layout.ts';

/** The one page shown without authentication: a token form, and nothing of any tenant. */
export function loginPage(context: PageContext, failed: boolean): SafeHtml {
  return html`
${failed ? html`<p class="danger" role="alert">That token is not accepted.</p>` : ''}
<form method="post" action="${href(context, '/login')}">
<label>Token<input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button>Log in</button>
</form>`;
}
