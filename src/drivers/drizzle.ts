/**
 * `pg-once/drizzle`: Drizzle over node-postgres or postgres.js. withTenant opens
 * `db.transaction(...)` READ COMMITTED; `fn` gets its tx, typed with the caller's schema, and
 * pg-once's statements run through `tx.execute(sql)`.
 */
import { type SQL, sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { Driver } from '../internal/driver.ts';
import type { WithTenantOptions } from '../options.ts';
import { driverApi } from './driver-api.ts';

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
    const strings = text.split(/\$(\d+)/).filter((piece, i) => (i % 2 === 1 ? (order.push(Number(piece) - 1), false) : true));
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

const driver: Driver<AnyDatabase, AnyTransaction> = {
  transaction: (db, fn) => db.transaction(fn, { isolationLevel: 'read committed' }),
  client(tx) {
    if (typeof (tx as AnyTransaction).rollback !== 'function') return undefined;
    return {
      owner: tx,
      async query(text, values) {
        try {
          // node-postgres answers a QueryResult, postgres.js the rows themselves.
          const result: unknown = await tx.execute(drizzleStatement(text, values));
          return (Array.isArray(result) ? result : (result as { rows: never[] }).rows);
        } catch (error) {
          throw driverError(error);
        }
      },
    };
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
