/**
 * `pg-once/postgres`: postgres.js. withTenant opens `sql.begin(...)`; `fn` gets its
 * TransactionSql, and pg-once's statements run through `unsafe(text, values)` on it.
 */
import type { Sql, TransactionSql } from 'postgres';
import type { Driver } from '../internal/driver.ts';
import type { WithTenantOptions } from '../options.ts';
import { driverApi } from './driver-api.ts';

/** postgres.js gives a transaction `savepoint`, and the top-level `sql` `begin`. */
const isTransaction = (tx: object): tx is TransactionSql => typeof (tx as TransactionSql).savepoint === 'function';

const driver: Driver<Sql<any>, TransactionSql<any>> = {
  transaction: (sql, fn) => sql.begin('isolation level read committed', fn) as Promise<never>,
  client: (tx) => (isTransaction(tx) ? { owner: tx, query: async (text, values) => await tx.unsafe(text, values as never[]) } : undefined),
};

const api = driverApi(driver);
export const { runIdempotent, enqueue, runIdempotentExternal } = api;
export const withTenant: <T, Types extends Record<string, unknown> = {}>(
  sql: Sql<Types>,
  tenantId: string,
  fn: (sql: TransactionSql<Types>) => Promise<T>,
  options?: WithTenantOptions,
) => Promise<T> = api.withTenant as never;
export const receiveOnce: <T, Types extends Record<string, unknown> = {}>(
  sql: Sql<Types>,
  message: Parameters<typeof api.receiveOnce>[1],
  fn: (sql: TransactionSql<Types>) => Promise<T>,
  options?: Parameters<typeof api.receiveOnce>[3],
) => ReturnType<typeof api.receiveOnce<T>> = api.receiveOnce as never;
