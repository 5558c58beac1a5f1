/**
 * What a database library's adapter (src/drivers/) tells the core: how to open a transaction on
 * the library's database handle, and how to run pg-once's statements in one of its transactions.
 * Everything else (tenant, role checks, claims, recorded failures) is the core's, written once.
 */
import type { Statement } from './inline-values.ts';
import type { TransactionClient } from './transaction-client.ts';

export interface Driver<Db, Tx> {
  /**
   * Opens a READ COMMITTED transaction on `db` and runs `fn` in it: commits when `fn` resolves,
   * rolls back and re-throws when it throws.
   */
  transaction<T>(db: Db, fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * Optional: `transaction`, with `opening` (withTenant's first statement, whose rows are not
   * needed) run before `fn` in the round trip of BEGIN where the library's connection allows it,
   * as a statement of its own where it does not.
   */
  transactionOpenedWith?<T>(db: Db, opening: Statement, fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * How pg-once runs statements in `tx`, or undefined when `tx` is not a transaction of this
   * library (a pool, a database handle): writes there would autocommit one by one.
   */
  client(tx: Tx): TransactionClient | undefined;
}
