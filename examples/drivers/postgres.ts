/**
 * pg-once with postgres.js: the claim, the order and its event commit in one `sql.begin`.
 * Run: DATABASE_URL=<an application login> node examples/drivers/postgres.ts
 */
import postgres from 'postgres';
import { enqueue, runIdempotent, withTenant } from '../../src/drivers/postgres.ts';
import { runExample } from './run-example.ts';

export function placeOrder(sql: postgres.Sql, tenantId: string, key: string) {
  return withTenant(sql, tenantId, (tx) =>
    runIdempotent(tx, key, async (tx) => {
      await tx`INSERT INTO orders (key, amount) VALUES (${key}, ${4200})`;
      await enqueue(tx, { topic: 'orders.created', payload: { key, amount: 4200 } });
      return { orderId: key };
    }),
  );
}

await runExample(
  import.meta.url,
  (url) => postgres(url),
  placeOrder,
  (sql) => sql.end(),
);
