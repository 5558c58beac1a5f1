/**
 * `pg-once/drizzle`: Drizzle over node-postgres or postgres.js. withTenant opens
 * `db.transaction(...)` READ COMMITTED (see read-committed.ts), or joins a tx the caller opened
 * (pg-once sets the tenant in it and leaves the commit to the caller, who checks
 * isRecordedFailure before letting an error roll it back); `fn` gets the tx, typed with the
 * caller's schema, and pg-once's statements run on the driver's client under it (see queryFor).
 */
import { entityKind, type SQL, sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { Driver } from '../internal/driver.ts';
import { perTransaction } from '../internal/per-transaction.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import type { WithTenantOptions } from '../with-tenant-options.ts';
import { driverApi } from './driver-api.ts';
import { isDeferredFailure } from '../internal/deferred-failure.ts';
import { shadowNextCall } from './shadow-next-call.ts';
import { MergingPgClient } from './merging-pg-client.ts';
import { nodePostgresQuery, postgresJsOutside, postgresJsQuery } from './native-query.ts';
import { PipelinedStatements, pipelineOf, withPipeline } from './pipelined-statements.ts';
import type { TransactionSql } from 'postgres';
import type { Statement } from '../internal/inline-values.ts';
import type pg from 'pg';
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

/** The wrapper of each tx's node-postgres client inside a transaction transactionOpenedWith opened (see merging-pg-client.ts). */
const merging = new WeakMap<object, MergingPgClient>();

/** Each tx's client, made once: withTenant and runIdempotent both ask for it. */
const clientOf = perTransaction((tx: AnyTransaction): TransactionClient => {
  const wrapper = merging.get(tx);
  if (wrapper) return { owner: tx, query: assertingReadCommitted(tx, queryFor(tx)), defer: (statement) => wrapper.defer(statement, tx) };
  const pipeline = pipelineOf(tx);
  if (pipeline)
    return { owner: tx, query: assertingReadCommitted(tx, (text, values) => pipeline.query(text, values)), defer: (statement) => pipeline.defer(statement) };
  return { owner: tx, query: assertingReadCommitted(tx, queryFor(tx)) };
});

/** The postgres.js client under a Drizzle database or transaction over postgres.js, else undefined. */
function postgresJsUnder(db: object): TransactionSql<any> | undefined {
  const client = (db as { session?: { client?: Record<string, unknown> } }).session?.client;
  return typeof client?.unsafe === 'function' && (typeof client.savepoint === 'function' || typeof client.begin === 'function') ? (client as never) : undefined;
}

/** Over postgres.js, a call's stored result is pipelined with the next statement or COMMIT (pipelined-statements.ts). */
function pipelineFor(db: AnyDatabase, tx: AnyTransaction): PipelinedStatements | undefined {
  const top = postgresJsUnder(db);
  const client = postgresJsUnder(tx);
  return top && client ? new PipelinedStatements((text, values) => postgresJsQuery(client, text, values), postgresJsOutside(top)) : undefined;
}

/** The node-postgres Pool or client under a Drizzle database over node-postgres, else undefined. */
function nodePostgresUnder(db: AnyDatabase): pg.Pool | pg.ClientBase | undefined {
  const session = (db as unknown as { session?: { client?: Record<string, unknown>; constructor?: Record<symbol, unknown> } }).session;
  // Only Drizzle's node-postgres session: other drivers with a pg-like `query` (Neon, PGlite) may not take several statements.
  if (session?.constructor?.[entityKind] !== 'NodePgSession' || typeof session.client?.query !== 'function') return undefined;
  return session.client as never;
}

/**
 * `opening` (withTenant's first statement) and a call's stored result in fewer round trips, in a
 * transaction Drizzle opens. Drizzle's transaction, as its first and synchronous act, takes a
 * client from the node-postgres Pool or calls postgres.js's `begin`, with no way to hand it either:
 * for that one call the method is shadowed (shadow-next-call.ts).
 * - node-postgres: the client the Pool gives is wrapped (merging-pg-client.ts): BEGIN carries the
 *   opening, COMMIT the stored result. The wrapper unwraps itself when Drizzle releases the client.
 * - postgres.js: `begin` is given READ COMMITTED (Drizzle would send SET TRANSACTION after BEGIN
 *   for it, a round trip), so the opening need not assert the level (read-committed.ts), and it is
 *   pipelined with the transaction's first statement, the stored result with COMMIT
 *   (pipelined-statements.ts).
 * BEGIN names the level in both. Any other driver: the opening is a statement of its own.
 */
async function transactionOpenedWith<T>(db: AnyDatabase, opening: Statement, fn: (tx: AnyTransaction) => Promise<T>): Promise<T> {
  const nodePostgres = isTransaction(db) ? undefined : nodePostgresUnder(db);
  if (nodePostgres) return openedOnNodePostgres(db, nodePostgres, opening, fn);
  const postgresJs = isTransaction(db) ? undefined : postgresJsUnder(db);
  if (postgresJs && typeof (postgresJs as unknown as { begin?: unknown }).begin === 'function') return openedOnPostgresJs(db, postgresJs, opening, fn);
  return driver.transaction(db, withOpening(opening, fn));
}

async function openedOnNodePostgres<T>(
  db: AnyDatabase,
  under: pg.Pool | pg.ClientBase,
  opening: Statement,
  fn: (tx: AnyTransaction) => Promise<T>,
): Promise<T> {
  let wrapper: MergingPgClient | undefined;
  const pooled = typeof (under as pg.Pool).totalCount === 'number';
  // One client, no pool: Drizzle runs the transaction on it, and nothing releases it. A client
  // already wrapped runs another transaction now (unsound on one client, but not made worse here).
  if (!pooled && MergingPgClient.isWrapped(under)) return driver.transaction(db, withOpening(opening, fn));
  let unshadow: (() => void) | undefined;
  if (pooled)
    unshadow = shadowNextCall<() => Promise<pg.PoolClient>>(under, 'connect', (connect) =>
      connect().then((client) => {
        // Drizzle sends BEGIN before the code that releases the client: if it fails, the wrapper releases it.
        wrapper = new MergingPgClient(client, opening, { releaseIfBeginFails: true });
        return client;
      }),
    );
  else wrapper = new MergingPgClient(under as pg.ClientBase, opening);
  let result: Promise<T>;
  try {
    result = db.transaction(
      async (tx) => {
        if (wrapper) merging.set(tx, wrapper);
        // A Drizzle that took its client some other way: the opening goes as a statement of its own.
        else await clientOf(tx).query(opening.text, opening.values);
        return fn(tx);
      },
      { isolationLevel: 'read committed' },
    );
  } finally {
    unshadow?.();
  }
  try {
    return await result;
  } catch (error) {
    // Drizzle wraps the error of its own statement (COMMIT, or the one the result went before) in
    // a DrizzleQueryError; when it is the stored result's failure, the caller gets pg-once's error.
    const cause = (error as { cause?: unknown } | null)?.cause;
    throw isDeferredFailure(cause) ? cause : error;
  } finally {
    // A pooled client unwrapped itself when Drizzle released it.
    wrapper?.restore();
  }
}

function openedOnPostgresJs<T>(db: AnyDatabase, sql: TransactionSql<any>, opening: Statement, fn: (tx: AnyTransaction) => Promise<T>): Promise<T> {
  let leveled = false;
  return withPipeline(
    (inner) => {
      const unshadow = shadowNextCall<(...args: unknown[]) => Promise<T>>(sql, 'begin', (begin, ...args) => {
        if (args.length !== 1) return begin(...args);
        leveled = true;
        return begin('isolation level read committed', args[0]);
      });
      try {
        return db.transaction(async (tx) => {
          // A Drizzle that began some other way: the level is set, then the opening sent, on their own.
          if (!leveled) {
            const client = postgresJsUnder(tx)!;
            await postgresJsQuery(client, 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED', []);
            await postgresJsQuery(client, opening.text, opening.values);
          }
          return inner(tx);
        });
      } finally {
        unshadow();
      }
    },
    (tx: AnyTransaction) => {
      const pipeline = pipelineFor(db, tx);
      if (leveled) pipeline?.open(opening);
      return pipeline;
    },
    fn,
  );
}

/** `fn` after the opening, sent as a statement of its own. */
const withOpening =
  <T>(opening: Statement, fn: (tx: AnyTransaction) => Promise<T>) =>
  async (tx: AnyTransaction): Promise<T> => {
    await clientOf(tx).query(opening.text, opening.values);
    return fn(tx);
  };

const driver: Driver<AnyDatabase, AnyTransaction> = {
  transaction: (db, fn) =>
    isTransaction(db)
      ? fn(db)
      : withPipeline(
          (body) => readCommittedTransaction(db, (setLevel, inner) => db.transaction(inner, setLevel ? { isolationLevel: 'read committed' } : undefined), body),
          (tx: AnyTransaction) => pipelineFor(db, tx),
          fn,
        ),
  transactionOpenedWith,
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
