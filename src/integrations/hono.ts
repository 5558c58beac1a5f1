/**
 * pg-once for Hono 4 (`import { idempotency } from 'pg-once/hono'`): an `Idempotency-Key`
 * middleware whose handler runs in the request's transaction, `c.get('tx')`. Hono serves
 * Web-standard Request/Response, so the same middleware serves Next.js route handlers
 * (`hono/vercel`), Bun, Deno and Cloudflare Workers (with a Postgres driver that runs there).
 *
 * A thin shim over src/http/run-http-request.ts: it reads the request, captures the handler's
 * Response as bytes inside the transaction, and sends what the core decided after the commit.
 */
import type { Context, MiddlewareHandler } from 'hono';
import type { Transaction } from 'kysely';
import type { CapturedAnswer } from '../http/http-answer.ts';
import { resolveHttpIdempotency, type HttpIdempotencyOptions } from '../http/http-idempotency-options.ts';
import { runHttpRequest, type HttpRequestFacts } from '../http/run-http-request.ts';

export type { HttpAnswer } from '../http/http-answer.ts';
export type { FromRequest, HttpIdempotencyOptions } from '../http/http-idempotency-options.ts';
export type { ProblemDetails } from '../http/problem-answer.ts';

/** The context variables the middleware sets: `c.get('tx')` is the request's transaction. */
export interface IdempotencyVariables<DB> {
  tx: Transaction<DB>;
}

/** Options of the Hono middleware: the functions of the request get Hono's `Context`. */
export type HonoIdempotencyOptions<DB = any> = HttpIdempotencyOptions<Context, DB>;

/**
 * Runs the route's handler at most once per `Idempotency-Key` within the tenant, in a transaction
 * that also holds the key and the stored answer: `c.get('tx')`. A retry gets the first answer's
 * status, headers (allow-listed) and body bytes with `Idempotent-Replayed: true`; pg-once's
 * refusals are `application/problem+json`. Mount it on the routes it guards:
 * `app.post('/orders', idempotency({ db, tenant }), handler)`.
 */
export function idempotency<DB>(options: HonoIdempotencyOptions<DB>): MiddlewareHandler<{ Variables: IdempotencyVariables<DB> }> {
  const config = resolveHttpIdempotency(options, 'pg-once/hono idempotency options');
  return async (c, next) => {
    const query = c.req.url.indexOf('?');
    const facts: HttpRequestFacts = {
      method: c.req.method.toUpperCase(),
      target: c.req.path + (query === -1 ? '' : c.req.url.slice(query)),
      route: c.req.routePath,
      header: (name) => c.req.header(name),
      body: () => readBody(c),
    };
    // The handler's Response when its body was read without being used up (see heldBody): then
    // that very Response goes out, as Hono would send it without the middleware.
    let intact: Response | undefined;
    try {
      const { kind, answer } = await runHttpRequest<Context, DB>(config, c, facts, async (tx) => {
        c.set('tx', tx);
        await next();
        // Hono hands a thrown error to onError, which already made c.res; rethrown here so the
        // call rolls back, and caught below so that Hono does not handle it twice.
        if (c.error) throw c.error;
        const response = c.res;
        const held = heldBody(response);
        intact = held === undefined ? undefined : response;
        return capture(response, held, config.replayHeaders);
      });
      if (kind !== 'replayed' && kind !== 'refused') {
        // The handler's answer. Untouched, it is still c.res; read as a stream, it is rebuilt
        // from its bytes with every header it had (several Set-Cookie included).
        if (intact !== undefined && intact === c.res) return;
        setResponse(c, answer, new Headers(c.res.headers));
        return;
      }
      // A replay or a problem adds its headers to what earlier middleware set, if anything.
      const earlier = c.res.headers;
      if (earlier.keys().next().done === true) {
        setResponse(c, answer, answer.headers);
        return;
      }
      const headers = new Headers(earlier);
      for (const [name, value] of Object.entries(answer.headers)) headers.set(name, value);
      setResponse(c, answer, headers);
    } catch (error) {
      if (error !== c.error) throw error;
    }
  };
}

function setResponse(c: Context, answer: CapturedAnswer, headers: Headers | Record<string, string>): void {
  // Cleared first: assigning over a Response makes Hono copy it through its body stream, a
  // second slow trip through web streams on every request (measured in bench/http.ts).
  c.res = undefined;
  c.res = new Response(answer.body.length === 0 ? null : answer.body, { status: answer.status, headers });
}

/** The body as the fingerprint takes it: JSON when it parses, else its bytes. Hono caches it for the handler. */
async function readBody(c: Context): Promise<unknown> {
  // Told from the headers when they say: reading `c.req.raw.body` makes Node's server adapter
  // build a full Request and give up its fast path for the body (measured in bench/http.ts). A
  // request that declares neither (HTTP/2 may send a body without content-length) is asked.
  const length = c.req.header('content-length');
  if (length === '0') return undefined;
  if (length === undefined && c.req.header('transfer-encoding') === undefined && c.req.raw.body === null) return undefined;
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (/\bjson\b/iu.test(c.req.header('content-type') ?? '')) {
    // Decoded as Request.text() decodes (UTF-8, replacement characters, a BOM dropped) and
    // cached as such, so that the handler's c.req.json() or text() parses this text instead of
    // having Hono rebuild a Response from the cached bytes to decode them again.
    const text = utf8.decode(bytes);
    c.req.bodyCache.text = Promise.resolve(text) as unknown as string; // Hono keeps promises there (its own validator does the same)
    try {
      return JSON.parse(text);
    } catch {
      // Not JSON after all: the bytes are the fingerprint, and the handler answers the parse error.
    }
  }
  return bytes;
}

const utf8 = new TextDecoder();

/**
 * The body of a Response made from a string or bytes, read without using it up, when the server
 * adapter says where it keeps it: @hono/node-server's lightweight Response holds
 * `[status, body, headers]` under a symbol described `cache` until something reads it as a
 * stream (and its server writes that body as it is). Reading it through `arrayBuffer()` instead
 * would make it build a full Response and pump the bytes through web streams, on every request
 * (bench/http.ts). Undefined for any other Response (other runtimes, streamed bodies): then
 * capture() reads the stream.
 */
function heldBody(response: Response): string | Uint8Array | null | undefined {
  for (const symbol of Object.getOwnPropertySymbols(response)) {
    if (symbol.description !== 'cache') continue;
    const held = (response as unknown as Record<symbol, unknown>)[symbol];
    if (!Array.isArray(held) || typeof held[0] !== 'number') return undefined;
    const body: unknown = held[1];
    return body === null || typeof body === 'string' || body instanceof Uint8Array ? body : undefined;
  }
  return undefined;
}

/** The handler's answer; of its headers, those a replay repeats (it goes out with all of them). */
async function capture(response: Response, held: string | Uint8Array | null | undefined, replayHeaders: ReadonlySet<string>): Promise<CapturedAnswer> {
  const headers: Record<string, string> = {};
  for (const name of replayHeaders) {
    const value = response.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  const body = held === undefined ? new Uint8Array(await response.arrayBuffer()) : (held ?? new Uint8Array());
  return { status: response.status, headers, body };
}
