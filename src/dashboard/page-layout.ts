import { html, type SafeHtml } from './html.ts';

export interface PageContext {
  /** The mount path, prefixed to every link. */
  basePath: string;
  /** Who is logged in; undefined on the login page. */
  actor?: string;
  /** The CSRF token for forms that post. */
  csrf?: string;
  readOnly: boolean;
  /** Whether the actor logged in with a token (and may log out). */
  tokenSession: boolean;
}

const SECTIONS = [
  ['/', 'Overview'],
  ['/backlog', 'Backlog'],
  ['/dead', 'Dead events'],
  ['/idempotency', 'Idempotency'],
] as const;

/** A link under the mount path, with its query string built (and so encoded) by URLSearchParams. */
export function href(context: PageContext, path: string, query: Record<string, string | undefined> = {}): string {
  const params = new URLSearchParams(Object.entries(query).filter((entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== ''));
  const search = params.toString();
  return `${context.basePath}${path === '/' && context.basePath ? '/' : path}${search ? `?${search}` : ''}`;
}

/** The hidden CSRF field every posting form carries. */
export function csrfField(context: PageContext): SafeHtml {
  return html`<input type="hidden" name="csrf" value="${context.csrf ?? ''}">`;
}

export function pageLayout(context: PageContext, current: string, title: string, body: SafeHtml): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
${context.csrf ? html`<meta name="csrf-token" content="${context.csrf}">` : ''}
<title>${title} · pg-once</title>
<link rel="stylesheet" href="${href(context, '/assets/dashboard.css')}">
<script src="${href(context, '/assets/dashboard.js')}" defer></script>
</head>
<body>
<header>
<strong>pg-once</strong>
${
  context.actor === undefined
    ? ''
    : SECTIONS.map(([path, label]) => html`<a href="${href(context, path)}"${current === path ? html` aria-current="page"` : ''}>${label}</a>`)
}
${
  context.actor === undefined
    ? ''
    : html`<span class="who">${context.actor}${context.readOnly ? ' · read-only' : ''}</span>
${context.tokenSession ? html`<form method="post" action="${href(context, '/logout')}">${csrfField(context)}<button>Log out</button></form>` : ''}`
}
</header>
<main>
<h1>${title}</h1>
${body}
</main>
</body>
</html>`;
}
