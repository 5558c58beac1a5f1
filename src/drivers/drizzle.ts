/**
 * `pg-once/drizzle`: Drizzle over node-postgres or postgres.js. withTenant opens
 * `db.transaction(...)` READ COMMITTED (see read-committed.ts), or joins a tx the caller opened
 * (pg-once sets the tenant in it and leaves the commit to the caller, who checks
 * isRecordedFailure before letting an error roll it back); `fn` gets the tx, typed with the
 * caller's schema, and pg-once's statements run on the driver's client under it (see queryFor).
 */
import { type SQL, sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { Driver } from '../internal/driver.ts';
import { perTransaction } from '../internal/per-transaction.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import type { WithTenantOptions } from '../with-tenant-options.ts';
import { driverApi } from './driver-api.ts';
import { nodePostgresQuery, postgresJsQuery } from './native-query.ts';
import { assertingReadCommitted, readCommittedTransaction } from './read-committed.ts';

type AnyDatabase = PgDatabase<PgQueryResultHKT, any, any>;
type AnyTransaction = PgTransaction<PgQueryResultHKT, any, any>;
/** The transaction type `db.transaction` hands its callback: the caller's schema, passed through. */
export type DrizzleTransactionOf<D extends AnyDatabase> = Parameters<Parameters<D['transaction']>[0]>[0];

/** A statement's `$n` text split once into the pieces around its values, and which value goes where. */
const split = new Map<string, { strings: TemplateStringsArray; order: number[] }>();
function drizzleStatement(text: string, values: readonly unknown[]): SQL {
  let statement = split.get(text);
  if (!statement) {
    const order: number[] = [];
    const strings = text.split(/\$(\d+)/).filter((piece, i) => {
      if (i % 2 === 0) return true;
      order.push(Number(piece) - 1);
      return false;
    });
    statement = { strings: Object.assign(strings, { raw: strings }) as unknown as TemplateStringsArray, order };
    // Statements without values (a savepoint of its own name per call) are not worth remembering.
    if (order.length > 0) split.set(text, statement);
  }
  return sql(statement.strings, ...statement.order.map((index) => sql.param(values[index])));
}

/** Drizzle 0.44+ wraps a failed query in DrizzleQueryError; pg-once maps the driver's error (its SQLSTATE). */
function driverError(error: unknown): unknown {
  const cause = (error as { cause?: { code?: unknown } } | null)?.cause;
  return typeof cause?.code === 'string' ? cause : error;
}

/** A PgTransaction has `rollback`; the database handle does not. */
const isTransaction = (db: AnyDatabase): db is AnyTransaction => typeof (db as AnyTransaction).rollback === 'function';

/**
 * How pg-once's statements run in `tx`: straight on the driver client under Drizzle's session
 * when it is postgres.js's or node-postgres's (Drizzle's `execute` does not prepare, so over
 * postgres.js it cost a describe round trip per statement, 10 round trips a fresh call; its SQL
 * template costs CPU besides), else through `tx.execute`. Drizzle's logger does not see them.
 */
function queryFor(tx: AnyTransaction): (text: string, values: readonly unknown[]) => Promise<never[]> {
  const client = (tx as unknown as { session?: { client?: Record<string, unknown> } }).session?.client;
  if (typeof client?.unsafe === 'function' && typeof client.savepoint === 'function') {
    return (text, values) => postgresJsQuery(client as never, text, values);
  }
  // A pg Pool has `query` too, but a transaction's session holds one client, never the pool.
  if (typeof client?.query === 'function' && typeof client.totalCount !== 'number') {
    return (text, values) => nodePostgresQuery(client as never, text, values);
  }
  return async (text, values) => {
    try {
      // node-postgres answers a QueryResult, postgres.js the rows themselves.
      const result: unknown = await tx.execute(drizzleStatement(text, values));
      return (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as never[];
    } catch (error) {
      throw driverError(error);
    }
  };
}

/** Each tx's client, made once: withTenant and runIdempotent both ask for it. */
const clientOf = perTransaction((tx: AnyTransaction): TransactionClient => ({ owner: tx, query: assertingReadCommitted(tx, queryFor(tx)) }));

const driver: Driver<AnyDatabase, AnyTransaction> = {
  transaction: (db, fn) =>
    isTransaction(db)
      ? fn(db)
      : readCommittedTransaction(db, (setLevel, inner) => db.transaction(inner, setLevel ? { isolationLevel: 'read committed' } : undefined), fn),
  client(tx) {
    if (!isTransaction(tx)) return undefined;
    return clientOf(tx);
  },
};

const api = driverApi(driver);
export const { runIdempotent, enqueue } = api;
export const withTenant: <D extends AnyDatabase, T>(
  db: D,
  tenantId: string,
  fn: (tx: DrizzleTransactionOf<D>) => Promise<T>,
  options?: WithTenantOptions,
) => Promise<T> = api.withTenant as never;
export const receiveOnce: <D extends AnyDatabase, T>(
  db: D,
  message: Parameters<typeof api.receiveOnce>[1],
  fn: (tx: DrizzleTransactionOf<D>) => Promise<T>,
  options?: Parameters<typeof api.receiveOnce>[3],
) => ReturnType<typeof api.receiveOnce<T>> = api.receiveOnce as never;
export const runIdempotentExternal: typeof api.runIdempotentExternal = api.runIdempotentExternal;
