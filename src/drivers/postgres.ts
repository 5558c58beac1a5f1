/**
 * `pg-once/postgres`: postgres.js. withTenant opens `sql.begin(...)`, or joins the TransactionSql
 * of a `sql.begin` the caller opened (pg-once sets the tenant in it and leaves the commit to the
 * caller, who checks isRecordedFailure before letting an error roll it back); `fn` gets the
 * TransactionSql, and pg-once's statements run through `unsafe(text, values)` on it (prepared:
 * see native-query.ts).
 */
import type { Sql, TransactionSql } from 'postgres';
import type { Driver } from '../internal/driver.ts';
import type { Statement } from '../internal/inline-values.ts';
import type { WithTenantOptions } from '../with-tenant-options.ts';
import { driverApi } from './driver-api.ts';
import { postgresJsOutside, postgresJsQuery } from './native-query.ts';
import { PipelinedStatements, pipelineOf, withPipeline } from './pipelined-statements.ts';

/** postgres.js gives a transaction `savepoint`, and the top-level `sql` `begin`. */
const isTransaction = (tx: object): tx is TransactionSql => typeof (tx as TransactionSql).savepoint === 'function';

/**
 * A transaction withTenant opens, pipelined (pipelined-statements.ts): `opening` (withTenant's
 * first statement) is sent right after BEGIN without waiting for its answer, so it shares the
 * round trip of the transaction's first statement (postgres.js sends BEGIN from its own code, with
 * nothing to add to it); the call's stored result shares COMMIT's (or the next statement's). The
 * opening's error, should it fail, is the one thrown: whatever came behind it was refused (25P02).
 */
function opened<T>(sql: Sql<any>, opening: Statement | undefined, fn: (tx: TransactionSql<any>) => Promise<T>): Promise<T> {
  return withPipeline(
    (inner) => sql.begin('isolation level read committed', inner) as Promise<T>,
    (tx) => {
      const pipeline = new PipelinedStatements((text, values) => postgresJsQuery(tx, text, values), postgresJsOutside(sql));
      if (opening) pipeline.open(opening);
      return pipeline;
    },
    fn,
  );
}

const driver: Driver<Sql<any> | TransactionSql<any>, TransactionSql<any>> = {
  transaction: (sql, fn) => (isTransaction(sql) ? fn(sql) : opened(sql, undefined, fn)),
  async transactionOpenedWith(sql, opening, fn) {
    if (!isTransaction(sql)) return opened(sql, opening, fn);
    await postgresJsQuery(sql, opening.text, opening.values);
    return fn(sql);
  },
  client(tx) {
    if (!isTransaction(tx)) return undefined;
    const pipeline = pipelineOf(tx);
    if (!pipeline) return { owner: tx, query: (text, values) => postgresJsQuery(tx, text, values) };
    return { owner: tx, query: (text, values) => pipeline.query(text, values), defer: (statement) => pipeline.defer(statement) };
  },
};

const api = driverApi(driver);
export const { runIdempotent, enqueue, runIdempotentExternal } = api;
// biome-ignore lint/complexity/noBannedTypes: `{}` is postgres.js's own default for Sql's type parameter; another default would not match `sql`.
export const withTenant: <T, Types extends Record<string, unknown> = {}>(
  sql: Sql<Types> | TransactionSql<Types>,
  tenantId: string,
  fn: (sql: TransactionSql<Types>) => Promise<T>,
  options?: WithTenantOptions,
) => Promise<T> = api.withTenant as never;
// biome-ignore lint/complexity/noBannedTypes: as above, postgres.js's own default.
export const receiveOnce: <T, Types extends Record<string, unknown> = {}>(
  sql: Sql<Types> | TransactionSql<Types>,
  message: Parameters<typeof api.receiveOnce>[1],
  fn: (sql: TransactionSql<Types>) => Promise<T>,
  options?: Parameters<typeof api.receiveOnce>[3],
) => ReturnType<typeof api.receiveOnce<T>> = api.receiveOnce as never;
