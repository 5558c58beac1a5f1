/**
 * A small orders API on Hono, behind pg-once's Idempotency-Key middleware. `POST /orders` writes
 * the order and its `orders.created` event in the request's transaction (`c.get('tx')`), which
 * also holds the key and the stored answer: a retried POST gets the first answer back, byte for
 * byte, and the order and its event exist once. The relay delivers the event afterwards.
 *
 * The tenant comes from the caller's credentials: here a bearer token looked up in a map, a
 * stand-in for real authentication. Never take it from the body or an unsigned header.
 */
import { Hono } from 'hono';
import { sql, type Generated, type Kysely } from 'kysely';
import { enqueue } from '../../src/index.ts';
import { idempotency } from '../../src/integrations/hono.ts';

/** The schema's business table (examples/demo/business-schema.ts), as Kysely sees it. */
export interface Database {
  orders: { tenant_id: Generated<string>; id: Generated<number>; run_id: string; customer: string; items: string; amount_cents: number };
}

export interface OrdersApiOptions {
  db: Kysely<Database>;
  /** Bearer token -> tenant. */
  tokens: ReadonlyMap<string, string>;
}

export function ordersApi({ db, tokens }: OrdersApiOptions): Hono {
  const app = new Hono();
  const tenantOf = (authorization: string | undefined) => tokens.get(authorization?.replace(/^Bearer /u, '') ?? '');
  const once = idempotency<Database>({ db, tenant: (c) => tenantOf(c.req.header('authorization')) });

  app.post('/orders', once, async (c) => {
    const body = await c.req.json<{ customer: string; items: string[]; amountCents: number }>();
    const tx = c.get('tx');
    const order = await tx
      .insertInto('orders')
      .values({ run_id: 'http', customer: body.customer, items: JSON.stringify(body.items), amount_cents: body.amountCents })
      .returning(['id', 'customer', 'amount_cents'])
      .executeTakeFirstOrThrow();
    await enqueue(tx, { topic: 'orders.created', payload: order });
    return c.json({ ...order, createdAt: new Date().toISOString() }, 201, { location: `/orders/${order.id}` });
  });

  // No key on a GET: the handler still runs in the tenant's transaction, under row-level security.
  app.get('/orders/count', once, async (c) => {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM orders`.execute(c.get('tx'));
    return c.json({ orders: rows[0]!.n });
  });
  return app;
}
