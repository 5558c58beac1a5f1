/**
 * The HTTP benchmark (issue 15): what the Idempotency-Key middleware costs over calling
 * withTenant + runIdempotent directly in a route handler, on each framework. Both routes run on
 * the same server, answer the same JSON, and are driven by the same client (fetch, keep-alive) at
 * the same concurrency; the direct route is what an application would write by hand (key from the
 * header, the body as the request, no replay of headers or bytes). Fresh keys, then replays.
 * Target: the middleware within 10% of the direct call.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { sql, type Kysely, type Transaction } from 'kysely';
import { runIdempotent, withTenant } from '../src/index.ts';
import { idempotency as expressIdempotency } from '../src/integrations/express.ts';
import { fastifyIdempotency } from '../src/integrations/fastify.ts';
import { idempotency as honoIdempotency } from '../src/integrations/hono.ts';
import { measureThroughput, printTable, type Throughput } from './harness.ts';
import type { BenchDatabase } from './setup.ts';

const CONCURRENCY = 16;
const POOL_SIZE = 16;
const TENANTS = 16;
const FRAMEWORKS = ['express', 'fastify', 'hono'] as const;
/** Paired measurements per framework and mode. */
const ROUNDS = 6;

async function createOrder(tx: Transaction<any>, key: string, amount: number) {
  await sql`INSERT INTO orders (key, amount) VALUES (${key}, ${amount})`.execute(tx);
  return { orderId: key, amount, currency: 'EUR' };
}

/** The direct call: what a route handler does with pg-once's core API alone. */
function direct(db: Kysely<any>, tenant: string, key: string, body: { amount: number }) {
  return withTenant(db, tenant, (tx) => runIdempotent(tx, key, (t) => createOrder(t, key, body.amount), { request: body }));
}

interface Served {
  url: string;
  close(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  if (!server.listening) await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function serveExpress(db: Kysely<any>): Promise<Served> {
  const app = express();
  app.post('/direct', express.json(), async (req, res) => {
    res.status(201).json(await direct(db, req.get('x-tenant')!, req.get('idempotency-key')!, req.body));
  });
  app.post('/middleware', express.json(), expressIdempotency({ db, tenant: (req) => req.get('x-tenant') }), async (req, res) => {
    res.status(201).json(await createOrder(res.locals.tx, req.get('idempotency-key')!, req.body.amount));
  });
  const server = app.listen(0, '127.0.0.1');
  return { url: await listen(server), close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function serveFastify(db: Kysely<any>): Promise<Served> {
  const app = Fastify();
  await app.register(fastifyIdempotency, { db, tenant: (request) => request.headers['x-tenant'] as string });
  app.post('/direct', async (request, reply) => {
    reply.code(201);
    return direct(db, request.headers['x-tenant'] as string, request.headers['idempotency-key'] as string, request.body as { amount: number });
  });
  app.post('/middleware', { config: { idempotency: true } }, async (request, reply) => {
    reply.code(201);
    return createOrder(request.tx, request.headers['idempotency-key'] as string, (request.body as { amount: number }).amount);
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, close: () => app.close() };
}

async function serveHono(db: Kysely<any>): Promise<Served> {
  const app = new Hono();
  app.post('/direct', async (c) => c.json(await direct(db, c.req.header('x-tenant')!, c.req.header('idempotency-key')!, await c.req.json()), 201));
  app.post('/middleware', honoIdempotency({ db, tenant: (c) => c.req.header('x-tenant') }), async (c) => {
    const body = await c.req.json<{ amount: number }>();
    return c.json(await createOrder(c.get('tx'), c.req.header('idempotency-key')!, body.amount), 201);
  });
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  return { url: await listen(server), close: () => new Promise((resolve) => server.close(() => resolve())) };
}

export interface HttpBenchResult {
  concurrency: number;
  throughput: Record<string, Throughput>;
  /** Middleware ops/s over direct ops/s, per framework and mode (1 = no overhead). */
  ratios: Record<string, number>;
  /** Middleware Node CPU per request over direct (1 = no overhead). */
  cpuRatios: Record<string, number>;
  /** The largest overhead measured, in percent of the direct call's throughput. */
  worstOverheadPercent: number;
  /** The largest extra Node CPU per request, in percent of the direct call's. */
  worstCpuOverheadPercent: number;
}

export async function runHttpBench(bench: BenchDatabase, seconds: number): Promise<HttpBenchResult> {
  const db = bench.kysely(POOL_SIZE);
  const throughput: Record<string, Throughput> = {};
  const ratios: Record<string, number> = {};
  const cpuRatios: Record<string, number> = {};
  const rows: (string | number)[][] = [];
  let run = 0;
  for (const framework of FRAMEWORKS) {
    const served = framework === 'express' ? await serveExpress(db) : framework === 'fastify' ? await serveFastify(db) : await serveHono(db);
    try {
      const call = (route: string, key: string, worker: number) =>
        fetch(`${served.url}/${route}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-tenant': `tenant-${worker % TENANTS}` },
          body: JSON.stringify({ amount: 100 }),
        }).then(async (response) => {
          await response.arrayBuffer();
          if (response.status !== 201) throw new Error(`${route} answered ${response.status}`);
        });
      for (const mode of ['fresh', 'replay'] as const) {
        const measure = async (route: string) => {
          const id = ++run;
          const cpuBefore = process.cpuUsage();
          const result = await measureThroughput(
            (worker, i) => call(route, mode === 'fresh' ? `${framework}-${id}-${worker}-${i}` : `${framework}-${route}-replay-${worker}`, worker),
            { concurrency: CONCURRENCY, seconds: seconds / 2, warmupSeconds: 0 },
          );
          const cpu = process.cpuUsage(cpuBefore);
          cpuMicroseconds[route] = (cpuMicroseconds[route] ?? 0) + cpu.user + cpu.system;
          opsCounted[route] = (opsCounted[route] ?? 0) + result.ops;
          return result;
        };
        const cpuMicroseconds: Record<string, number> = {};
        const opsCounted: Record<string, number> = {};
        // Paired rounds, the order alternating (direct first, then middleware first): on a shared
        // machine the load drifts within seconds, and a ratio of two neighbouring measurements
        // carries less of that drift than a ratio of two totals. The median pair is reported.
        const pairs: { direct: Throughput; middleware: Throughput }[] = [];
        for (let round = 0; round < ROUNDS; round += 1) {
          const first = round % 2 === 0 ? 'direct' : 'middleware';
          const a = await measure(first);
          const b = await measure(first === 'direct' ? 'middleware' : 'direct');
          pairs.push(first === 'direct' ? { direct: a, middleware: b } : { direct: b, middleware: a });
        }
        const ratioOf = (pair: (typeof pairs)[number]) => pair.middleware.opsPerSecond / pair.direct.opsPerSecond;
        const sorted = pairs.map(ratioOf).sort((x, y) => x - y);
        const ratio = (sorted[Math.floor((sorted.length - 1) / 2)]! + sorted[Math.ceil((sorted.length - 1) / 2)]!) / 2;
        const total = (route: 'direct' | 'middleware'): Throughput => {
          const ops = pairs.reduce((sum, pair) => sum + pair[route].ops, 0);
          const secondsTotal = pairs.reduce((sum, pair) => sum + pair[route].seconds, 0);
          return { ops, seconds: secondsTotal, opsPerSecond: ops / secondsTotal, errors: pairs.reduce((sum, pair) => sum + pair[route].errors, 0) };
        };
        throughput[`${framework} ${mode} direct`] = total('direct');
        throughput[`${framework} ${mode} middleware`] = total('middleware');
        ratios[`${framework} ${mode}`] = ratio;
        // Node CPU (server and client in this process) per request: steadier than throughput when
        // other work shares the machine, and the middleware's cost is CPU in this process.
        const cpuPerRequest = (route: string) => cpuMicroseconds[route]! / opsCounted[route]!;
        cpuRatios[`${framework} ${mode}`] = cpuPerRequest('middleware') / cpuPerRequest('direct');
        rows.push([
          `${framework}, ${mode} keys`,
          total('direct').opsPerSecond,
          total('middleware').opsPerSecond,
          `${((1 - ratio) * 100).toFixed(1)}%`,
          `${Math.round(cpuPerRequest('direct'))} / ${Math.round(cpuPerRequest('middleware'))} µs`,
        ]);
      }
    } finally {
      await served.close();
    }
  }
  console.log(`\nrequests/s at concurrency ${CONCURRENCY} (fetch keep-alive on loopback, pool of ${POOL_SIZE}):`);
  printTable(['route', 'direct req/s', 'middleware req/s', 'throughput overhead (median pair)', 'Node CPU per request direct / middleware'], rows);
  console.log('direct: withTenant + runIdempotent called in the route handler; middleware: pg-once/<framework>');
  const worstOverheadPercent = Math.max(...Object.values(ratios).map((ratio) => (1 - ratio) * 100));
  const worstCpuOverheadPercent = Math.max(...Object.values(cpuRatios).map((ratio) => (ratio - 1) * 100));
  console.log(
    `\nworst middleware overhead: throughput ${worstOverheadPercent.toFixed(1)}%, Node CPU per request ${worstCpuOverheadPercent.toFixed(1)}% (target <= 10%)`,
  );
  return { concurrency: CONCURRENCY, throughput, ratios, cpuRatios, worstOverheadPercent, worstCpuOverheadPercent };
}
