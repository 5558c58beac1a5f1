/**
 * pg-once with Knex: the claim, the order and its event commit in one `knex.transaction`.
 * Run: DATABASE_URL=<an application login> node examples/drivers/knex.ts
 */
import knex, { type Knex } from 'knex';
import { enqueue, runIdempotent, withTenant } from '../../src/drivers/knex.ts';
import { runExample } from './run-example.ts';

export function placeOrder(db: Knex, tenantId: string, key: string) {
  return withTenant(db, tenantId, (trx) =>
    runIdempotent(trx, key, async (trx) => {
      await trx('orders').insert({ key, amount: 4200 });
      await enqueue(trx, { topic: 'orders.created', payload: { key, amount: 4200 } });
      return { orderId: key };
    }),
  );
}

await runExample(
  import.meta.url,
  (url) => knex({ client: 'pg', connection: url }),
  placeOrder,
  (db) => db.destroy(),
);
