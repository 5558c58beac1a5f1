/**
 * A Next.js App Router route handler (app/api/orders/route.ts) honouring Idempotency-Key through
 * pg-once/hono: Hono serves Web-standard Request/Response, which is what Next.js route handlers
 * take and return (`hono/vercel`'s `handle`). The same app runs on Bun, Deno and Workers.
 * Type-checked with the repository (tsconfig.json includes docs/recipes).
 */
import { Hono } from 'hono';
import { handle } from 'hono/vercel';
import { Kysely, PostgresDialect, type Generated } from 'kysely';
import pg from 'pg';
import { enqueue } from 'pg-once';
import { idempotency } from 'pg-once/hono';

interface Database {
  orders: { tenant_id: Generated<string>; id: Generated<number>; customer: string; amount_cents: number };
}

// One pool per server instance (module scope), as the application role (never a superuser).
const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 5 }) }) });

/** Your authentication: the tenant of the caller's verified session or token. */
declare function tenantOfSession(authorization: string | undefined): string | undefined;

const app = new Hono().basePath('/api');

app.post('/orders', idempotency<Database>({ db, tenant: (c) => tenantOfSession(c.req.header('authorization')) }), async (c) => {
  const { customer, amountCents } = await c.req.json<{ customer: string; amountCents: number }>();
  const tx = c.get('tx'); // Transaction<Database>: the key, the row and the event commit together
  const order = await tx.insertInto('orders').values({ customer, amount_cents: amountCents }).returning(['id']).executeTakeFirstOrThrow();
  await enqueue(tx, { topic: 'orders.created', payload: { id: order.id, customer, amountCents } });
  return c.json({ id: order.id }, 201, { location: `/api/orders/${order.id}` });
});

// app/api/orders/route.ts exports the methods it serves:
export const POST = handle(app);
