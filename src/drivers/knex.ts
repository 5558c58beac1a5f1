/**
 * `pg-once/knex`: Knex on PostgreSQL. withTenant opens `knex.transaction(...)` READ COMMITTED,
 * or joins a trx the caller opened (pg-once sets the tenant in it and leaves the commit to the
 * caller, who checks isRecordedFailure before letting an error roll it back); `fn` gets the trx,
 * and pg-once's statements run on its connection (see queryFor).
 */
import type { Knex } from 'knex';
import type { Driver } from '../internal/driver.ts';
import { perTransaction } from '../internal/per-transaction.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import type pg from 'pg';
import { driverApi } from './driver-api.ts';
import { MergingPgClient } from './merging-pg-client.ts';
import { nodePostgresQuery } from './native-query.ts';
import type { Statement } from '../internal/inline-values.ts';

/**
 * knex.raw binds `?`, not `$n`: each statement's placeholders are rewritten once, remembering
 * which value goes where (`$4` may appear twice). pg-once's statements hold no `?` of their own.
 */
const rewritten = new Map<string, { text: string; order: number[] }>();
function knexStatement(text: string): { text: string; order: number[] } {
  // Statements without values (a savepoint of its own name per call) are not worth remembering.
  if (!text.includes('$')) return { text, order: [] };
  let statement = rewritten.get(text);
  if (!statement) {
    const order: number[] = [];
    statement = {
      text: text.replace(/\$(\d+)/g, (_, n: string) => {
        order.push(Number(n) - 1);
        return '?';
      }),
      order,
    };
    rewritten.set(text, statement);
  }
  return statement;
}

function rawQuery(trx: Knex.Transaction, text: string, values: readonly unknown[]): Promise<never[]> {
  const statement = knexStatement(text);
  return trx.raw(statement.text, statement.order.map((index) => values[index]) as Knex.RawBinding[]).then((result: { rows: never[] }) => result.rows);
}

/**
 * How pg-once's statements run in `trx`: on the node-postgres connection the trx holds (Knex's
 * runner, its `?` bindings and its query events cost CPU per statement that a bare Knex
 * transaction does not pay for pg-once's three), else through `trx.raw`. A trx that has
 * completed goes to `trx.raw` too, which refuses it, rather than to a connection back in the pool.
 */
function queryFor(trx: Knex.Transaction): (text: string, values: readonly unknown[]) => Promise<never[]> {
  const client = trx.client as { driverName?: unknown; acquireConnection?: () => Promise<unknown> } | undefined;
  if (client?.driverName !== 'pg' || typeof client.acquireConnection !== 'function') return (text, values) => rawQuery(trx, text, values);
  let connection: Promise<unknown> | undefined;
  return async (text, values) => {
    if (trx.isCompleted()) return rawQuery(trx, text, values);
    // A transaction's client always hands out the transaction's own connection.
    connection ??= client.acquireConnection!();
    const held = (await connection) as pg.ClientBase;
    return nodePostgresQuery(held, text, values);
  };
}

/** The wrapper of each trx's connection inside a transaction transactionOpenedWith opened (see merging-pg-client.ts). */
const merging = new WeakMap<object, MergingPgClient>();

/** Each trx's client, made once: withTenant and runIdempotent both ask for it, and it holds the connection. */
const clientOf = perTransaction((trx: Knex.Transaction): TransactionClient => {
  const wrapper = merging.get(trx);
  return { owner: trx, query: queryFor(trx), defer: wrapper && ((statement) => wrapper.defer(statement, trx)) };
});

const readCommitted = <T>(knex: Knex, fn: (trx: Knex.Transaction) => Promise<T>, connection?: unknown): Promise<T> =>
  knex.transaction(fn, { isolationLevel: 'read committed', ...(connection === undefined ? {} : { connection }) });

/**
 * BEGIN with `opening`, and a call's stored result with COMMIT (merging-pg-client.ts): Knex's
 * transaction runs on a node-postgres connection pg-once takes from Knex's pool and wraps for the
 * transaction's length (Knex takes a transaction's connection from its config, and then leaves
 * its release to whoever gave it). Another driver under Knex gets the statement on its own.
 */
async function transactionOpenedWith<T>(knex: Knex, opening: Statement, fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  const client = knex.client as {
    driverName?: unknown;
    acquireConnection?: () => Promise<unknown>;
    releaseConnection?: (connection: unknown) => Promise<unknown>;
  };
  if (
    knex.isTransaction === true ||
    client.driverName !== 'pg' ||
    typeof client.acquireConnection !== 'function' ||
    typeof client.releaseConnection !== 'function'
  ) {
    return driver.transaction(knex, async (trx) => {
      await clientOf(trx).query(opening.text, opening.values);
      return fn(trx);
    });
  }
  const connection = (await client.acquireConnection()) as pg.ClientBase;
  const wrapper = new MergingPgClient(connection, opening);
  try {
    return await readCommitted(
      knex,
      (trx) => {
        merging.set(trx, wrapper);
        return fn(trx);
      },
      connection,
    );
  } finally {
    wrapper.restore();
    // Knex marks a connection with its transaction's id and unmarks only connections it acquired
    // itself (its query events report the id). Cleared, not deleted: a deleted property turns the
    // client into a slow hash-table object for good (see method-hook.ts).
    (connection as { __knexTxId?: unknown }).__knexTxId = undefined;
    await client.releaseConnection(connection);
  }
}

const driver: Driver<Knex, Knex.Transaction> = {
  transaction: (knex, fn) => (knex.isTransaction === true ? fn(knex as Knex.Transaction) : readCommitted(knex, fn)),
  transactionOpenedWith,
  client(trx) {
    if (trx.isTransaction !== true) return undefined;
    return clientOf(trx);
  },
};

export const { withTenant, runIdempotent, enqueue, receiveOnce, runIdempotentExternal } = driverApi(driver);
