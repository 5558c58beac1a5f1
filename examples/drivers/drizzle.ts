/**
 * pg-once with Drizzle (here over node-postgres; `drizzle-orm/postgres-js` works the same): the
 * claim, the order and its event commit in one `db.transaction`.
 * Run: DATABASE_URL=<an application login> node examples/drivers/drizzle.ts
 */
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { enqueue, runIdempotent, withTenant } from '../../src/drivers/drizzle.ts';
import { runExample } from './run-example.ts';

const orders = pgTable('orders', { key: text('key').notNull(), amount: integer('amount').notNull() });

export function placeOrder(db: NodePgDatabase, tenantId: string, key: string) {
  return withTenant(db, tenantId, (tx) =>
    runIdempotent(tx, key, async (tx) => {
      await tx.insert(orders).values({ key, amount: 4200 });
      await enqueue(tx, { topic: 'orders.created', payload: { key, amount: 4200 } });
      return { orderId: key };
    }),
  );
}

await runExample(
  import.meta.url,
  (url) => drizzle(url),
  placeOrder,
  (db) => db.$client.end(),
);
