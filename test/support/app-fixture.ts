/**
 * The common setting of the core tests: a database of the file's own, an application login role
 * (NOSUPERUSER NOBYPASSRLS, granted the database's app role) reached through Kysely, and a business table
 * `orders` under the same per-tenant RLS as pg-once's tables, the way a user's schema would be.
 */
import type { Kysely } from 'kysely';
import { ordersTableSql } from '../../support/orders-table.ts';
import { createTestDatabase, type TestDatabase } from './test-database.ts';

export interface AppFixture {
  database: TestDatabase;
  /** Kysely as the application role. */
  app: Kysely<any>;
  appUrl: string;
  /** Business rows stored for a tenant (read as superuser, past RLS). */
  orders(tenantId?: string): Promise<{ tenant_id: string; key: string; amount: number }[]>;
  /** Rows of a pg-once table (read as superuser, past RLS). */
  rows<Row = Record<string, unknown>>(table: 'idempotency_keys' | 'outbox_events' | 'dedupe_audit', where?: string): Promise<Row[]>;
  close(): Promise<void>;
}

export async function createAppFixture(poolSize = 10): Promise<AppFixture> {
  const database = await createTestDatabase();
  await database.admin.query(ordersTableSql((await database.roles())!.app));
  const appUrl = await database.createLoginRole('app');
  const app = database.kysely(appUrl, { max: poolSize });
  return {
    database,
    app,
    appUrl,
    async orders(tenantId) {
      const { rows } = await database.admin.query(
        tenantId === undefined
          ? 'SELECT tenant_id, key, amount FROM public.orders ORDER BY id'
          : 'SELECT tenant_id, key, amount FROM public.orders WHERE tenant_id = $1 ORDER BY id',
        tenantId === undefined ? [] : [tenantId],
      );
      return rows;
    },
    async rows(table, where = 'true') {
      const { rows } = await database.admin.query(`SELECT * FROM once.${table} WHERE ${where} ORDER BY tenant_id`);
      return rows;
    },
    close: () => database.drop(),
  };
}
