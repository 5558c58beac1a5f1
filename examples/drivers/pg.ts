/**
 * pg-once with node-postgres: the claim, the order and its event commit in one transaction.
 * Run: DATABASE_URL=<an application login> node examples/drivers/pg.ts (a migrated database
 * with the `orders` table of support/orders-table.ts).
 */
import pg from 'pg';
import { enqueue, runIdempotent, withTenant } from '../../src/drivers/pg.ts';
import { runExample } from './run-example.ts';

export function placeOrder(pool: pg.Pool, tenantId: string, key: string) {
  return withTenant(pool, tenantId, (client) =>
    runIdempotent(client, key, async (tx) => {
      await tx.query('INSERT INTO orders (key, amount) VALUES ($1, $2)', [key, 4200]);
      await enqueue(tx, { topic: 'orders.created', payload: { key, amount: 4200 } });
      return { orderId: key };
    }),
  );
}

await runExample(
  import.meta.url,
  (url) => new pg.Pool({ connectionString: url }),
  placeOrder,
  (pool) => pool.end(),
);
