/**
 * Who is asking, and whether a form post really came from a dashboard page.
 *
 * - Tokens: compared as sha256 digests with timingSafeEqual (no early exit that times a guess).
 *   A browser posts the token once to /login and gets a session cookie: HttpOnly (page scripts
 *   cannot read it), SameSite=Strict (other sites' pages do not send it), signed with a key drawn
 *   at random when the handler is made, so sessions end with the process and need no storage.
 *   Scripts send `Authorization: Bearer <token>` instead.
 * - CSRF: every action is a POST carrying a token derived from the actor with the same key
 *   (HMAC): a page on another origin can make a browser post, but cannot read a dashboard page to
 *   learn the token, nor compute it. Posts whose Origin or Sec-Fetch-Site name another site are
 *   refused before that. Basic auth and a host application's cookie session are sent by browsers
 *   on cross-site posts too, which is why the check never depends on how the actor was found.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ResolvedDashboardOptions } from './dashboard-options.ts';

export const SESSION_COOKIE = 'pg_once_dashboard';

export interface DashboardAuth {
  /** The actor's name, or undefined when the request is not authenticated. */
  identify(request: IncomingMessage): Promise<string | undefined>;
  /** A session cookie for a correct token, else undefined. */
  login(token: string, secure: boolean): string | undefined;
  logoutCookie(secure: boolean): string;
  csrfToken(actor: string): string;
  checkCsrf(actor: string, token: string | undefined): boolean;
  /** Whether a login form should be offered (tokens are configured). */
  readonly acceptsTokens: boolean;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest();

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  return v4.startsWith('127.') || address === '::1';
}

export function createDashboardAuth(options: ResolvedDashboardOptions): DashboardAuth {
  const key = randomBytes(32);
  const digests = (options.tokens ?? []).map((token) => ({ digest: sha256(token), actor: `token:${sha256(token).toString('hex').slice(0, 12)}` }));
  const path = options.basePath || '/';
  const mac = (text: string) => createHmac('sha256', key).update(text).digest('base64url');
  const equal = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

  const tokenActor = (token: string): string | undefined => {
    const digest = sha256(token);
    let actor: string | undefined;
    // Every configured token is compared, whichever matches.
    for (const entry of digests) if (timingSafeEqual(entry.digest, digest)) actor = entry.actor;
    return actor;
  };
  const cookie = (value: string, maxAgeSeconds: number, secure: boolean) =>
    `${SESSION_COOKIE}=${value}; Path=${path}; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;

  const sessionActor = (request: IncomingMessage): string | undefined => {
    const value = readCookie(request.headers.cookie, SESSION_COOKIE);
    const [body, signature] = value?.split('.') ?? [];
    if (!body || !signature || !equal(signature, mac(`session\0${body}`))) return undefined;
    const session = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as { a: string; e: number };
    return session.e > Date.now() ? session.a : undefined;
  };

  return {
    acceptsTokens: digests.length > 0,
    async identify(request) {
      const bearer = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '')?.[1];
      if (bearer !== undefined && digests.length > 0) {
        const actor = tokenActor(bearer);
        if (actor) return actor;
      }
      if (digests.length > 0) {
        const actor = sessionActor(request);
        if (actor) return actor;
      }
      if (options.authorize) {
        const actor = await options.authorize(request);
        if (typeof actor === 'string' && actor !== '') return actor;
      }
      if (options.allowUnauthenticatedLoopback && isLoopbackAddress(request.socket.remoteAddress)) {
        return `loopback:${request.socket.remoteAddress}`;
      }
      return undefined;
    },
    login(token, secure) {
      const actor = digests.length > 0 ? tokenActor(token) : undefined;
      if (!actor) return undefined;
      const body = Buffer.from(JSON.stringify({ a: actor, e: Date.now() + options.sessionTtl })).toString('base64url');
      return cookie(`${body}.${mac(`session\0${body}`)}`, Math.floor(options.sessionTtl / 1_000), secure);
    },
    logoutCookie: (secure) => cookie('', 0, secure),
    csrfToken: (actor) => mac(`csrf\0${actor}`),
    checkCsrf: (actor, token) => token !== undefined && equal(token, mac(`csrf\0${actor}`)),
  };
}

/**
 * A post a browser made from another site's page: its Origin names another host, or
 * Sec-Fetch-Site says cross-site. Requests without either header (scripts) pass this check and
 * still need the CSRF token.
 */
export function isCrossSite(request: IncomingMessage): boolean {
  if (request.headers['sec-fetch-site'] === 'cross-site') return true;
  const origin = request.headers.origin;
  if (origin === undefined) return false;
  const host = URL.parse(origin)?.host;
  return host === undefined || host !== request.headers.host;
}

function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of header?.split(';') ?? []) {
    const index = part.indexOf('=');
    if (index > 0 && part.slice(0, index).trim() === name) return part.slice(index + 1).trim();
  }
  return undefined;
}
