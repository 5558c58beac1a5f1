/**
 * Kysely's adapter, the root API's: a transaction is Kysely's `Transaction`, and pg-once's
 * statements run through it as compiled queries (so its plugins and logging see them, as they
 * saw the `sql` tag pg-once used before there were other libraries).
 */
import { CompiledQuery, type Kysely, type Transaction } from 'kysely';
import type { Driver } from '../internal/driver.ts';
import type { Statement } from '../internal/inline-values.ts';
import { isTransaction } from '../internal/is-transaction.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import { checkKyselyBackend } from './kysely-backend-check.ts';
import { MergingConnection, markOwn } from './merging-connection.ts';
import { wrappedByOthers } from './method-hook.ts';
import { backendChecked, isDirect } from './native-query.ts';

/** The connection wrapper of each transaction opened by transactionOpenedWith, by its Transaction. */
const merging = new WeakMap<object, MergingConnection>();
/** Kysely instances whose connections refused several statements in one query (see merging-connection.ts). */
const oneStatementPerQuery = new WeakSet<object>();

export function kyselyClient(tx: Transaction<any>): TransactionClient | undefined {
  if (!isTransaction(tx)) return undefined;
  const connection = merging.get(tx);
  return {
    owner: tx,
    async query<Row>(text: string, values: readonly unknown[]) {
      return (await tx.executeQuery<Row>(markOwn(CompiledQuery.raw(text, [...values])))).rows as Row[];
    },
    defer: connection && ((statement) => connection.defer(statement, tx)),
  };
}

const readCommitted = <T>(db: Kysely<any>, fn: (tx: Transaction<any>) => Promise<T>) => db.transaction().setIsolationLevel('read committed').execute(fn);

/**
 * BEGIN and `opening` in one round trip: the transaction is Kysely's own, opened on a connection
 * reserved with db.connection() and wrapped for its length (see merging-connection.ts).
 */
async function transactionOpenedWith<T>(db: Kysely<any>, opening: Statement, fn: (tx: Transaction<any>) => Promise<T>): Promise<T> {
  if (oneStatementPerQuery.has(db)) return openedBySeparateStatement(db, opening, fn);
  let wrapper: MergingConnection | undefined;
  try {
    return await db.connection().execute(async (single) => {
      const connection = await single.getExecutor().provideConnection(async (reserved) => reserved);
      // A logging wrapper (Kysely's `log`) hands each statement's SQL to the application's log
      // function, which expects text: the statements then go as text, merged (merging-connection.ts).
      const logged = wrappedByOthers(connection, 'executeQuery');
      if (!logged && !backendChecked(connection)) await checkKyselyBackend(connection);
      wrapper = new MergingConnection(connection, opening, !logged && isDirect(connection));
      try {
        return await readCommitted(single, (tx) => {
          merging.set(tx, wrapper!);
          return fn(tx);
        });
      } finally {
        wrapper.restore();
      }
    });
  } catch (error) {
    // Refused before anything ran (fn included): this handle's connections take one statement per query.
    if (!wrapper?.refused) throw error;
    oneStatementPerQuery.add(db);
    return openedBySeparateStatement(db, opening, fn);
  }
}

function openedBySeparateStatement<T>(db: Kysely<any>, opening: Statement, fn: (tx: Transaction<any>) => Promise<T>): Promise<T> {
  return readCommitted(db, async (tx) => {
    await tx.executeQuery(CompiledQuery.raw(opening.text, [...opening.values]));
    return fn(tx);
  });
}

export const kyselyDriver: Driver<Kysely<any>, Transaction<any>> = {
  transaction: readCommitted,
  transactionOpenedWith,
  client: kyselyClient,
};
