/**
 * `pg-once/pg`: node-postgres. withTenant takes a Pool (pg-once opens the transaction on one of
 * its clients) or a client already inside the caller's own transaction (pg-once sets the tenant
 * in it and leaves COMMIT to the caller, who checks isRecordedFailure before rolling back).
 */
import type pg from 'pg';
import type { Driver } from '../internal/driver.ts';
import { driverApi } from './driver-api.ts';
import { MergingPgClient } from './merging-pg-client.ts';
import { nodePostgresQuery } from './native-query.ts';
import { NotInTransactionError } from '../errors.ts';
import type { Statement } from '../internal/inline-values.ts';

const isPool = (db: object): db is pg.Pool => typeof (db as pg.Pool).totalCount === 'number';

const BEGIN = 'BEGIN ISOLATION LEVEL READ COMMITTED';

/**
 * Whether `client` is outside any transaction. A client withTenant wraps is in one even before its
 * first statement: its BEGIN is held until then (merging-pg-client.ts), so the status node-postgres
 * last heard from the server still says idle.
 */
const outsideTransaction = (client: pg.ClientBase): boolean => client.getTransactionStatus?.() === 'I' && !MergingPgClient.isWrapped(client);

/** The wrapper of each client inside a transaction transactionOpenedWith opened (see merging-pg-client.ts). */
const merging = new WeakMap<object, MergingPgClient>();

/**
 * Opens the transaction (on a client of the Pool) and runs `fn` in it; `opening`, withTenant's
 * first statement, goes in the round trip of BEGIN, and a call's stored result in COMMIT's (see
 * merging-pg-client.ts).
 */
async function transaction<T>(db: pg.Pool | pg.ClientBase, opening: Statement | undefined, fn: (tx: pg.ClientBase) => Promise<T>): Promise<T> {
  if (!isPool(db)) {
    // A client outside a transaction would autocommit each statement, the tenant lost after the first.
    if (outsideTransaction(db))
      throw new NotInTransactionError('pg-once: withTenant was given a pg client outside a transaction: BEGIN first, or pass the Pool.');
    if (opening) await nodePostgresQuery(db, opening.text, opening.values);
    return fn(db);
  }
  const client = await db.connect();
  const wrapper = opening && new MergingPgClient(client, opening);
  if (wrapper) merging.set(client, wrapper);
  // Unwrapped before the client goes back to the pool, whichever way the transaction ends.
  const release = (lost?: Error) => {
    merging.delete(client);
    wrapper?.restore();
    client.release(lost);
  };
  try {
    await client.query(BEGIN);
    const result = await fn(client);
    await client.query('COMMIT');
    release();
    return result;
  } catch (error) {
    // A client whose ROLLBACK failed is destroyed, not pooled inside a broken transaction.
    await client.query('ROLLBACK').then(
      () => release(),
      (lost: Error) => release(lost),
    );
    throw error;
  }
}

const driver: Driver<pg.Pool | pg.ClientBase, pg.ClientBase> = {
  transaction: (db, fn) => transaction(db, undefined, fn),
  transactionOpenedWith: transaction,
  client(tx) {
    if (isPool(tx) || typeof tx.query !== 'function' || outsideTransaction(tx)) return undefined;
    const wrapper = merging.get(tx);
    return { owner: tx, query: (text, values) => nodePostgresQuery(tx, text, values), defer: wrapper && ((statement) => wrapper.defer(statement, tx)) };
  },
};

const api = driverApi(driver);
export const { runIdempotent, enqueue, receiveOnce, runIdempotentExternal } = api;
export const withTenant: {
  <T>(pool: pg.Pool, tenantId: string, fn: (client: pg.PoolClient) => Promise<T>, options?: Parameters<typeof api.withTenant>[3]): Promise<T>;
  <T, C extends pg.ClientBase>(client: C, tenantId: string, fn: (client: C) => Promise<T>, options?: Parameters<typeof api.withTenant>[3]): Promise<T>;
} = api.withTenant as never;
