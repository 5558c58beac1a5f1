/**
 * The same small orders API on Express 5, Fastify 5 and Hono 4, each behind pg-once's adapter and
 * listening on loopback, so one suite (test/integrations/http/http-suite.ts) runs against all three.
 * The tenant comes from `x-tenant`, the principal from `x-user` (a stand-in for authentication).
 *
 * Routes, each writing an order row keyed by the Idempotency-Key and enqueuing an event in the
 * request's transaction:
 *   POST /orders          201 JSON with a random token (a re-execution could never answer the same bytes),
 *                         and text outside ASCII (its bytes are not its characters)
 *   PATCH /orders         the same
 *   POST /orders/fail     503 after the insert (not stored: rolls back)
 *   POST /orders/throw    throws after the insert (the framework answers 500; rolls back)
 *   POST /orders/reject   404 JSON (stored and replayed)
 *   POST /bytes           200 with random binary bytes
 *   GET  /orders/count    the tenant's orders, counted in the (unkeyed) transaction
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { sql, type Kysely, type Transaction } from 'kysely';
import { enqueue } from '../../src/index.ts';
import { idempotency as expressIdempotency } from '../../src/integrations/express.ts';
import { fastifyIdempotency } from '../../src/integrations/fastify.ts';
import { idempotency as honoIdempotency } from '../../src/integrations/hono.ts';
import type { HttpIdempotencyOptions } from '../../src/http/http-idempotency-options.ts';

export const FRAMEWORKS = ['express', 'fastify', 'hono'] as const;
export type Framework = (typeof FRAMEWORKS)[number];

export interface AppHooks {
  /** Awaited inside POST /orders after the insert, before answering (to hold a request in flight). */
  gate?: (key: string) => Promise<void>;
  /** Counts handler executions, by route. */
  executions?: Map<string, number>;
}

export interface RunningApp {
  url: string;
  close(): Promise<void>;
}

/** Options besides db, tenant and principal, which the apps set. */
export type AppOptions = Partial<Omit<HttpIdempotencyOptions<unknown>, 'db' | 'tenant' | 'principal'>>;

interface Answer {
  status: number;
  headers?: Record<string, string>;
  json?: unknown;
  bytes?: Uint8Array;
}

type Route = 'orders' | 'fail' | 'throw' | 'reject' | 'bytes';

/** The business logic, the same on every framework. */
async function handle(route: Route, tx: Transaction<any>, key: string | undefined, body: { amount?: number } | undefined, hooks: AppHooks): Promise<Answer> {
  hooks.executions?.set(route, (hooks.executions.get(route) ?? 0) + 1);
  const amount = typeof body?.amount === 'number' ? body.amount : 1;
  const { rows } = await sql<{ id: string }>`INSERT INTO orders (key, amount) VALUES (${key ?? 'unkeyed'}, ${amount}) RETURNING id`.execute(tx);
  const id = rows[0]!.id;
  await enqueue(tx, { topic: 'orders.created', payload: { id, key, amount } });
  if (route === 'orders' && key !== undefined && process.env.HOLD_FOREVER === key) {
    process.stdout.write('IN_HANDLER\n');
    await new Promise(() => {}); // the parent kills this process here
  }
  if (route === 'orders' && key !== undefined) await hooks.gate?.(key);
  switch (route) {
    case 'orders':
      return {
        status: 201,
        headers: { location: `/orders/${id}`, 'x-trace': randomUUID() },
        json: { id, key, amount, token: randomUUID(), city: 'Zürich 🚀' },
      };
    case 'fail':
      return { status: 503, json: { error: 'upstream down', token: randomUUID() } };
    case 'throw':
      throw new Error('handler failed after its insert');
    case 'reject':
      return { status: 404, json: { error: 'no such customer', token: randomUUID() } };
    case 'bytes':
      return { status: 200, headers: { 'content-type': 'application/octet-stream' }, bytes: randomBytes(64) };
  }
}

async function count(tx: Transaction<any>): Promise<Answer> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM orders`.execute(tx);
  return { status: 200, json: { orders: rows[0]!.n } };
}

const ROUTES: [string, Route][] = [
  ['/orders', 'orders'],
  ['/orders/fail', 'fail'],
  ['/orders/throw', 'throw'],
  ['/orders/reject', 'reject'],
  ['/bytes', 'bytes'],
];

export async function startHttpApp(framework: Framework, db: Kysely<any>, options: AppOptions = {}, hooks: AppHooks = {}): Promise<RunningApp> {
  if (framework === 'express') return startExpress(db, options, hooks);
  if (framework === 'fastify') return startFastify(db, options, hooks);
  return startHono(db, options, hooks);
}

async function startExpress(db: Kysely<any>, options: AppOptions, hooks: AppHooks): Promise<RunningApp> {
  const app = express();
  const once_ = expressIdempotency({
    db,
    tenant: (req) => req.get('x-tenant'),
    principal: (req) => req.get('x-user'),
    ...options,
  });
  for (const [path, route] of ROUTES) {
    app.post(path, express.json(), once_, async (req, res) => {
      send(res, await handle(route, res.locals.tx, req.get('idempotency-key'), req.body, hooks));
    });
  }
  app.patch('/orders', express.json(), once_, async (req, res) => {
    send(res, await handle('orders', res.locals.tx, req.get('idempotency-key'), req.body, hooks));
  });
  app.get('/orders/count', once_, async (_req, res) => send(res, await count(res.locals.tx)));
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };

  function send(res: express.Response, answer: Answer) {
    res.status(answer.status).set(answer.headers ?? {});
    if (answer.bytes) res.send(Buffer.from(answer.bytes));
    else res.json(answer.json);
  }
}

async function startFastify(db: Kysely<any>, options: AppOptions, hooks: AppHooks): Promise<RunningApp> {
  const app = Fastify();
  await app.register(fastifyIdempotency, {
    db,
    tenant: (request) => headerOf(request.headers['x-tenant']),
    principal: (request) => headerOf(request.headers['x-user']),
    ...options,
  });
  for (const [method, path, route] of [...ROUTES.map(([path, route]) => ['POST', path, route] as const), ['PATCH', '/orders', 'orders'] as const]) {
    app.route({
      method,
      url: path,
      config: { idempotency: true },
      handler: async (request, reply) => {
        const answer = await handle(route, request.tx, headerOf(request.headers['idempotency-key']), request.body as { amount?: number }, hooks);
        reply.code(answer.status).headers(answer.headers ?? {});
        return answer.bytes ? Buffer.from(answer.bytes) : answer.json;
      },
    });
  }
  app.get('/orders/count', { config: { idempotency: true } }, async (request, reply) => {
    const answer = await count(request.tx);
    return reply.code(answer.status).send(answer.json);
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, close: () => app.close() };
}

async function startHono(db: Kysely<any>, options: AppOptions, hooks: AppHooks): Promise<RunningApp> {
  const app = new Hono();
  const once_ = honoIdempotency({ db, tenant: (c) => c.req.header('x-tenant'), principal: (c) => c.req.header('x-user'), ...options });
  for (const [method, path, route] of [...ROUTES.map(([path, route]) => ['POST', path, route] as const), ['PATCH', '/orders', 'orders'] as const]) {
    app.on(method, path, once_, async (c) => {
      const body = (await c.req.json().catch(() => undefined)) as { amount?: number } | undefined;
      const answer = await handle(route, c.get('tx'), c.req.header('idempotency-key'), body, hooks);
      if (answer.bytes) return c.body(Buffer.from(answer.bytes), answer.status as 200, answer.headers);
      return c.json(answer.json, answer.status as 200, answer.headers);
    });
  }
  app.get('/orders/count', once_, async (c) => c.json((await count(c.get('tx'))).json));
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function headerOf(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
