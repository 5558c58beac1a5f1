/**
 * `pg-once/pg`: node-postgres. withTenant takes a Pool (pg-once opens the transaction on one of
 * its clients) or a client already inside the caller's own transaction (pg-once sets the tenant
 * in it and leaves COMMIT to the caller, who checks isRecordedFailure before rolling back).
 */
import type pg from 'pg';
import type { Driver } from '../internal/driver.ts';
import { driverApi } from './driver-api.ts';
import { nodePostgresQuery } from './native-query.ts';
import { NotInTransactionError } from '../errors.ts';

const isPool = (db: object): db is pg.Pool => typeof (db as pg.Pool).totalCount === 'number';

const driver: Driver<pg.Pool | pg.ClientBase, pg.ClientBase> = {
  async transaction(db, fn) {
    if (!isPool(db)) {
      // A client outside a transaction would autocommit each statement, the tenant lost after the first.
      if (db.getTransactionStatus?.() === 'I')
        throw new NotInTransactionError('pg-once: withTenant was given a pg client outside a transaction: BEGIN first, or pass the Pool.');
      return fn(db);
    }
    const client = await db.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
      const result = await fn(client);
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (error) {
      // A client whose ROLLBACK failed is destroyed, not pooled inside a broken transaction.
      await client.query('ROLLBACK').then(
        () => client.release(),
        (lost: Error) => client.release(lost),
      );
      throw error;
    }
  },
  client(tx) {
    if (isPool(tx) || typeof tx.query !== 'function' || tx.getTransactionStatus?.() === 'I') return undefined;
    return { owner: tx, query: (text, values) => nodePostgresQuery(tx, text, values) };
  },
};

const api = driverApi(driver);
export const { runIdempotent, enqueue, receiveOnce, runIdempotentExternal } = api;
export const withTenant: {
  <T>(pool: pg.Pool, tenantId: string, fn: (client: pg.PoolClient) => Promise<T>, options?: Parameters<typeof api.withTenant>[3]): Promise<T>;
  <T, C extends pg.ClientBase>(client: C, tenantId: string, fn: (client: C) => Promise<T>, options?: Parameters<typeof api.withTenant>[3]): Promise<T>;
} = api.withTenant as never;
