/**
 * Kysely's adapter, the root API's: a transaction is Kysely's `Transaction`, and pg-once's
 * statements run through it as compiled queries (so its plugins and logging see them, as they
 * saw the `sql` tag pg-once used before there were other libraries).
 */
import { CompiledQuery, type Kysely, type Transaction } from 'kysely';
import type { Driver } from '../internal/driver.ts';
import { isTransaction } from '../internal/is-transaction.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';

export function kyselyClient(tx: Transaction<any>): TransactionClient | undefined {
  if (!isTransaction(tx)) return undefined;
  return {
    owner: tx,
    async query<Row>(text: string, values: readonly unknown[]) {
      return (await tx.executeQuery<Row>(CompiledQuery.raw(text, [...values]))).rows as Row[];
    },
  };
}

export const kyselyDriver: Driver<Kysely<any>, Transaction<any>> = {
  transaction: (db, fn) => db.transaction().setIsolationLevel('read committed').execute(fn),
  client: kyselyClient,
};
