/**
 * pg-once for Fastify 5 (`import { fastifyIdempotency } from 'pg-once/fastify'`): a plugin that
 * gives every route with `config: { idempotency: true }` (or an object of per-route options)
 * `Idempotency-Key` handling, its handler running in the request's transaction, `request.tx`.
 *
 * A thin shim over src/http/run-http-request.ts. The plugin wraps each such route's handler when
 * the route is added (an onRoute hook: register the plugin before the routes), holds what the
 * handler sends, serialised as Fastify would (the route's response schema applies), until the
 * transaction has committed, and a replay sends the stored bytes.
 */
import type { FastifyPluginCallback, FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import type { Transaction } from 'kysely';
import type { CapturedAnswer } from '../http/http-answer.ts';
import { resolveHttpIdempotency, type HttpIdempotencyOptions } from '../http/http-idempotency-options.ts';
import { runHttpRequest, type HttpRequestFacts } from '../http/run-http-request.ts';

export type { HttpAnswer } from '../http/http-answer.ts';
export type { FromRequest, HttpIdempotencyOptions } from '../http/http-idempotency-options.ts';
export type { ProblemDetails } from '../http/problem-answer.ts';

/**
 * Augment it to type `request.tx` with your database:
 * `declare module 'pg-once/fastify' { interface FastifyIdempotencyTypes { database: Database } }`.
 */
// biome-ignore lint/suspicious/noEmptyInterface: empty on purpose; users augment it (declaration merging needs an interface).
export interface FastifyIdempotencyTypes {}

/** The database type of `request.tx`: `FastifyIdempotencyTypes['database']`, else `any`. */
export type IdempotencyDatabase = FastifyIdempotencyTypes extends { database: infer DB } ? DB : any;

/** Options of the plugin: the functions of the request get Fastify's `FastifyRequest`. */
export type FastifyIdempotencyOptions<DB = IdempotencyDatabase> = HttpIdempotencyOptions<FastifyRequest, DB>;

/** A route's own options (`config.idempotency`), over the plugin's: any of them but `db`. */
export type FastifyRouteIdempotency = Partial<Omit<FastifyIdempotencyOptions, 'db'>>;

declare module 'fastify' {
  interface FastifyRequest {
    /** The transaction of a route with `config.idempotency` (pg-once/fastify); null elsewhere. */
    tx: Transaction<IdempotencyDatabase>;
  }
  interface FastifyContextConfig {
    /** pg-once's Idempotency-Key handling for this route: true, or options over the plugin's. (Default: off) */
    idempotency?: boolean | FastifyRouteIdempotency;
  }
}

/** Marks a handler this plugin wrapped. */
const WRAPPED = Symbol('pg-once idempotency');

/** Nothing was sent: distinct from a handler that sends undefined. */
const NOTHING = Symbol('nothing sent');

function plugin(
  fastify: Parameters<FastifyPluginCallback<FastifyIdempotencyOptions>>[0],
  options: FastifyIdempotencyOptions,
  done: (error?: Error) => void,
): void {
  // Validated now, so that a bad option fails register (passed to done: a throw here would
  // escape avvio) rather than a route's first request.
  try {
    resolveHttpIdempotency(options, 'pg-once/fastify plugin options');
  } catch (error) {
    done(error as Error);
    return;
  }
  fastify.decorateRequest('tx', null as unknown as Transaction<IdempotencyDatabase>);
  fastify.addHook('onRoute', (route) => {
    const own = route.config?.idempotency;
    if (own === undefined || own === false) return;
    const config = resolveHttpIdempotency<FastifyRequest>(
      own === true ? options : ({ ...options, ...own } as FastifyIdempotencyOptions),
      `pg-once/fastify options of route ${route.method} ${route.url}`,
    );
    const handler = route.handler as RouteHandlerMethod;
    // Fastify adds a HEAD route for each GET with the GET's options, wrapped handler included:
    // wrapped twice, a HEAD request would run in two transactions.
    if ((handler as { [WRAPPED]?: true })[WRAPPED]) return;
    route.handler = Object.assign(
      async function idempotentHandler(this: ThisParameterType<RouteHandlerMethod>, request: FastifyRequest, reply: FastifyReply) {
        const facts: HttpRequestFacts = {
          method: request.method.toUpperCase(),
          target: request.url,
          route: request.routeOptions.url,
          header: (name) => headerValue(request.headers[name.toLowerCase()]),
          body: () => request.body,
        };
        const { kind, answer } = await runHttpRequest<FastifyRequest, IdempotencyDatabase>(config, request, facts, async (tx) => {
          request.tx = tx;
          let sent: unknown = NOTHING;
          const { promise: sending, resolve } = Promise.withResolvers<void>();
          (reply as unknown as Record<string, unknown>).send = (payload: unknown) => {
            sent = payload;
            resolve();
            return reply;
          };
          try {
            // A handler that sends and returns `reply` returns a thenable that settles only once the
            // answer is on the wire, which is after this transaction: the send itself is the end.
            const returned = Promise.resolve(handler.call(this, request, reply) as unknown);
            returned.catch(() => {});
            // (Never resolve a promise with `reply` itself: it is a thenable, and would be waited for.)
            const value = await Promise.race([returned, sending.then(() => NOTHING)]);
            if (sent === NOTHING && value !== reply) sent = value;
          } finally {
            delete (reply as unknown as Record<string, unknown>).send;
          }
          return serialize(reply, sent === NOTHING ? undefined : sent, config.replayHeaders);
        });
        if (kind === 'replayed' || kind === 'refused') reply.headers(answer.headers);
        reply.code(answer.status);
        // Bytes, never a string: Fastify would run a string through a reply serializer again.
        const { body } = answer;
        return reply.send(typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
      },
      { [WRAPPED]: true as const },
    );
  });
  done();
}

/**
 * Registers the plugin: `await app.register(fastifyIdempotency, { db, tenant })`, before the
 * routes, then `app.post('/orders', { config: { idempotency: true } }, handler)`. Not
 * encapsulated (as fastify-plugin would mark it), so the routes of the registering scope and its
 * children are seen.
 */
export const fastifyIdempotency = Object.assign(plugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'pg-once-idempotency',
}) as FastifyPluginCallback<FastifyIdempotencyOptions>;

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * The body Fastify would send for `payload` (its serialised text, or bytes), with the
 * content-type it would give it, and the headers a replay repeats.
 */
function serialize(reply: FastifyReply, payload: unknown, replayHeaders: ReadonlySet<string>): CapturedAnswer {
  if (payload instanceof Error) throw payload; // reply.send(error) is Fastify's way of throwing
  if (typeof (payload as { pipe?: unknown } | null)?.pipe === 'function' || payload instanceof ReadableStream) {
    throw new TypeError('pg-once/fastify: a route with idempotency must send a body, not a stream (a stream cannot be stored and replayed).');
  }
  let body: Uint8Array | string;
  let type: string | undefined;
  if (payload === undefined) body = new Uint8Array();
  else if (typeof payload === 'string') [body, type] = [payload, 'text/plain; charset=utf-8'];
  else if (payload instanceof Uint8Array) [body, type] = [payload, 'application/octet-stream'];
  else {
    const text = reply.serialize(payload);
    [body, type] = [typeof text === 'string' ? text : new Uint8Array(text), 'application/json; charset=utf-8'];
  }
  if (type !== undefined && !reply.hasHeader('content-type')) reply.header('content-type', type);
  // Only what a replay repeats: the handler's answer itself goes out with every header it set.
  const headers: Record<string, string> = {};
  for (const name of replayHeaders) {
    const value = reply.getHeader(name);
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return { status: reply.statusCode, headers, body };
}
