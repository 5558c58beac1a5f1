/**
 * dashboardHandler(): the operator dashboard as one node:http request handler, so it mounts in
 * node:http, Express (app.use), Fastify (reply.hijack() and the raw request) or Hono on Node
 * (c.env.incoming / outgoing); `pg-once dashboard` serves it alone. Server-rendered HTML, one
 * small script, inline SVG charts: no build step and nothing fetched from elsewhere.
 *
 * Every page and action runs as the database login given, which must hold the relay role (one
 * role check, remembered once it passed); nothing needs a superuser. Pages are GETs that change
 * nothing; requeue and discard are POSTs from a confirmation page, with a CSRF token, refused in
 * read-only mode, and recorded in once.operator_actions with who did it (sql/0010).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import pg from 'pg';
import { OnceError } from '../errors.ts';
import { assertOperatorRole } from '../ops/operator-role.ts';
import { type DatabaseTarget, type Session, withSession } from '../internal/session.ts';
import { parseOptions } from '../options.ts';
import { createDashboardAuth, isCrossSite } from './dashboard-auth.ts';
import { DASHBOARD_CSS, DASHBOARD_JS } from './dashboard-assets.ts';
import { type DashboardOptions, dashboardOptionsSchema } from './dashboard-options.ts';
import { html, type SafeHtml } from './html.ts';
import { href, type PageContext, pageLayout } from './page-layout.ts';
import { backlogPage } from './pages/backlog-page.ts';
import { confirmPage } from './pages/confirm-page.ts';
import { deadEventsPage, EVENT_ID } from './pages/dead-events-page.ts';
import { eventPage } from './pages/event-page.ts';
import { idempotencyPage } from './pages/idempotency-page.ts';
import { keyPage } from './pages/key-page.ts';
import { loginPage } from './pages/login-page.ts';
import { overviewPage } from './pages/overview-page.ts';
import { FormTooLargeError, readForm } from './read-form.ts';
import { settleDeadEvents } from '../ops/dashboard-sql/settle-dead-events.ts';

export type { DashboardOptions } from './dashboard-options.ts';

export interface DashboardHandler {
  /** Answers one request; never rejects (failures become error pages). */
  (request: IncomingMessage, response: ServerResponse): Promise<void>;
  /** Ends the pool the handler opened for a connection string (a pool or Kysely given is yours). */
  close(): Promise<void>;
}

/** Most events one action may touch: one confirmation page's worth. */
const MAX_EVENTS_PER_ACTION = 1_000;

const SECURITY_HEADERS = {
  // No inline script or style anywhere: a payload that escaped escaping still could not run.
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // URLs name tenants and keys: never sent to another site. Not 'no-referrer', under which
  // browsers send `Origin: null` with the dashboard's own posts, which isCrossSite() refuses.
  'referrer-policy': 'same-origin',
  // Pages hold tenants' events: never kept by a shared cache or the browser's back button.
  'cache-control': 'no-store',
};

class HttpProblem extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export function dashboardHandler(options: DashboardOptions): DashboardHandler {
  const opts = parseOptions(dashboardOptionsSchema, options, 'dashboard options');
  const auth = createDashboardAuth(opts);
  const ownedPool = typeof opts.database === 'string' ? new pg.Pool({ connectionString: opts.database, max: opts.poolSize }) : undefined;
  // A connection the server ends (restart, idle timeout) must not crash the host process.
  ownedPool?.on('error', () => {});
  const target: DatabaseTarget = ownedPool ?? (opts.database as Exclude<DatabaseTarget, string>);
  let roleChecked = false;

  const withDatabase = <T>(fn: (session: Session) => Promise<T>) =>
    withSession(target, async (session) => {
      if (!roleChecked) {
        await assertOperatorRole(session, 'the dashboard');
        roleChecked = true;
      }
      return fn(session);
    });

  const handler = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? '/', 'http://dashboard.invalid');
    let path = url.pathname;
    if (opts.basePath && (path === opts.basePath || path.startsWith(`${opts.basePath}/`))) path = path.slice(opts.basePath.length);
    if (path === '') path = '/';
    const secure = (request.socket as { encrypted?: boolean }).encrypted === true;
    const context: PageContext = { basePath: opts.basePath, readOnly: opts.readOnly, tokenSession: false };
    const send = (status: number, body: SafeHtml | string, headers: Record<string, string> = {}) => {
      if (response.headersSent) return;
      response.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'text/html; charset=utf-8', ...headers });
      response.end(String(body));
    };
    const page = (status: number, current: string, title: string, body: SafeHtml, headers?: Record<string, string>) =>
      send(status, pageLayout(context, current, title, body), headers);
    const redirect = (location: string, headers: Record<string, string> = {}) => send(303, '', { location, ...headers });

    try {
      if (request.method === 'GET' && (path === '/assets/dashboard.css' || path === '/assets/dashboard.js')) {
        const css = path.endsWith('.css');
        send(200, css ? DASHBOARD_CSS : DASHBOARD_JS, { 'content-type': css ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8' });
        return;
      }
      if (request.method !== 'GET' && request.method !== 'POST') throw new HttpProblem(405, 'Only GET and POST.');
      const post = request.method === 'POST';
      if (post && isCrossSite(request)) throw new HttpProblem(403, 'Refused: the form was posted from another site.');

      if (post && path === '/login') {
        const form = await readForm(request);
        const cookie = auth.login(form.get('token') ?? '', secure);
        if (cookie) return redirect(href(context, '/'), { 'set-cookie': cookie });
        return page(401, '', 'Log in', loginPage(context, true));
      }
      const actor = await auth.identify(request);
      if (actor === undefined) {
        // Nothing of any tenant before this point: only the login form, or a refusal.
        if (auth.acceptsTokens) return page(401, '', 'Log in', loginPage(context, false));
        throw new HttpProblem(opts.allowUnauthenticatedLoopback && !opts.authorize ? 403 : 401, 'Not authorized.');
      }
      Object.assign(context, { actor, csrf: auth.csrfToken(actor), tokenSession: actor.startsWith('token:') });

      if (post) {
        const form = await readForm(request);
        if (!auth.checkCsrf(actor, form.get('csrf') ?? undefined))
          throw new HttpProblem(403, 'Refused: the form carried no valid CSRF token. Reload the page and try again.');
        if (path === '/logout') return redirect(href(context, '/login'), { 'set-cookie': auth.logoutCookie(secure) });
        const action = path === '/dead/requeue' ? 'requeue' : path === '/dead/discard' ? 'discard' : undefined;
        if (!action) throw new HttpProblem(404, 'No such action.');
        if (opts.readOnly) throw new HttpProblem(403, 'Refused: this dashboard is read-only.');
        const ids = eventIds(form.getAll('id'));
        const settled = await withDatabase((session) =>
          settleDeadEvents(session, action, ids, actor, { via: 'dashboard', address: request.socket.remoteAddress ?? null }),
        );
        return redirect(href(context, '/dead', { done: action, count: String(settled.ids.length) }));
      }

      const query = url.searchParams;
      switch (path) {
        case '/':
          return page(200, '/', 'Overview', await withDatabase((session) => overviewPage(session, context, query, opts.sweepSchedule)));
        case '/backlog':
          return page(200, '/backlog', 'Backlog', await withDatabase((session) => backlogPage(session, context, query, opts.pageSize)));
        case '/dead':
          return page(200, '/dead', 'Dead events', await withDatabase((session) => deadEventsPage(session, context, query, opts.pageSize)));
        case '/dead/confirm': {
          if (opts.readOnly) throw new HttpProblem(403, 'Refused: this dashboard is read-only.');
          const action = query.get('action');
          if (action !== 'requeue' && action !== 'discard') throw new HttpProblem(400, 'Choose requeue or discard.');
          const ids = eventIds(query.getAll('id'));
          const title = action === 'requeue' ? 'Requeue dead events' : 'Discard dead events';
          return page(200, '/dead', title, await withDatabase((session) => confirmPage(session, context, action, ids)));
        }
        case '/event': {
          const tenant = query.get('tenant');
          const id = query.get('id');
          if (!tenant || !id || !EVENT_ID.test(id)) throw new HttpProblem(400, 'Give a tenant and an event id.');
          const body = await withDatabase((session) => eventPage(session, context, tenant, id));
          if (!body) throw new HttpProblem(404, 'No such event (delivered events are swept after their retention).');
          return page(200, '/dead', `Event ${id}`, body);
        }
        case '/idempotency':
          return page(200, '/idempotency', 'Idempotency', await withDatabase((session) => idempotencyPage(session, context, query, opts.pageSize)));
        case '/idempotency/key': {
          const tenant = query.get('tenant');
          const key = query.get('key');
          if (!tenant || !key) throw new HttpProblem(400, 'Give a tenant and a key.');
          return page(200, '/idempotency', 'Key', await withDatabase((session) => keyPage(session, context, tenant, key)));
        }
        case '/login':
          return redirect(href(context, '/'));
        default:
          throw new HttpProblem(404, 'No such page.');
      }
    } catch (error) {
      const status = error instanceof HttpProblem ? error.status : error instanceof FormTooLargeError ? 413 : 500;
      // Errors of ours carry a code and a message meant for operators; anything else is
      // summarised, since a driver error may quote a row (a unique violation names its values).
      const message =
        error instanceof HttpProblem
          ? error.message
          : error instanceof OnceError
            ? `${error.message} [${error.code}]`
            : status === 413
              ? 'The form is too large.'
              : `Internal error${context.actor ? `: ${(error as Error)?.message ?? String(error)}` : ''}.`;
      page(status, '', status === 500 ? 'Error' : 'Refused', html`<p class="error" role="alert">${message}</p>`);
    }
  };
  return Object.assign(handler, {
    close: async () => {
      await ownedPool?.end();
    },
  });
}

/** Event ids of a form: each a positive integer, at most one page's worth. */
function eventIds(values: readonly string[]): string[] {
  const ids = [...new Set(values)];
  if (ids.length === 0) throw new HttpProblem(400, 'Select at least one event.');
  if (ids.length > MAX_EVENTS_PER_ACTION) throw new HttpProblem(400, `At most ${MAX_EVENTS_PER_ACTION} events per action.`);
  if (!ids.every((id) => EVENT_ID.test(id))) throw new HttpProblem(400, 'Event ids are positive integers.');
  return ids;
}
