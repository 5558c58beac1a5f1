/**
 * pg-once with Kysely (the root API): `fn` gets the caller's `Transaction<DB>`, so a typo in a
 * table or a column is a type error.
 * Run: DATABASE_URL=<an application login> node examples/drivers/kysely.ts
 */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { enqueue, runIdempotent, withTenant } from '../../src/index.ts';
import { runExample } from './run-example.ts';

interface Database {
  orders: { key: string; amount: number };
}

export function placeOrder(db: Kysely<Database>, tenantId: string, key: string) {
  return withTenant(db, tenantId, (tx) =>
    runIdempotent(tx, key, async (tx) => {
      await tx.insertInto('orders').values({ key, amount: 4200 }).execute();
      await enqueue(tx, { topic: 'orders.created', payload: { key, amount: 4200 } });
      return { orderId: key };
    }),
  );
}

await runExample(
  import.meta.url,
  (url) => new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) }),
  placeOrder,
  (db) => db.destroy(),
);
