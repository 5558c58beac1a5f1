/**
 * READ COMMITTED without a round trip of its own, for libraries that cannot put the isolation
 * level into BEGIN: Drizzle over postgres.js and Prisma send `SET TRANSACTION ISOLATION LEVEL` as
 * a statement after BEGIN when asked for one, which made a fresh call 7 round trips where Kysely
 * and node-postgres take 6. Their transactions open with the connection's default level instead,
 * and the first statement pg-once sends in one (withTenant's own, before fn runs) asserts READ
 * COMMITTED: `set_config('transaction_isolation', 'read committed', true)` is a no-op at that
 * level, and fails (25001, "must be called before any query") at any other, since the statement
 * has taken its snapshot. A handle whose default is another level is remembered, and from then on
 * its transactions ask the library for READ COMMITTED (the extra round trip that then buys it).
 */
import type { TransactionClient } from '../internal/transaction-client.ts';

const ASSERT = "set_config('transaction_isolation', 'read committed', true) AS once_read_committed";
const LEADING_SELECT = /^\s*SELECT\s/i;

/** The transactions opened at the connection's default level whose first statement is still to come. */
const unchecked = new WeakSet<object>();
/** Errors of that first statement: the level was another (or the statement failed otherwise). */
const firstStatementErrors = new WeakSet<object>();
/** Handles whose transactions are not READ COMMITTED by default. */
const setsIsolation = new WeakSet<object>();

/**
 * Opens a transaction on `db` with `open`, at the default level (`setLevel` false) when `db`
 * is not known to need `SET TRANSACTION`; `fn` runs in it. When the first statement refused the
 * level, nothing of `fn` has run (that statement is withTenant's): the transaction is opened
 * again with the level set, once for this handle.
 */
export async function readCommittedTransaction<Db extends object, Tx extends object, T>(
  db: Db,
  open: (setLevel: boolean, fn: (tx: Tx) => Promise<T>) => Promise<T>,
  fn: (tx: Tx) => Promise<T>,
): Promise<T> {
  if (setsIsolation.has(db)) return open(true, fn);
  try {
    return await open(false, (tx) => {
      unchecked.add(tx);
      return fn(tx);
    });
  } catch (error) {
    if (typeof error !== 'object' || error === null || !firstStatementErrors.has(error) || (error as { code?: unknown }).code !== '25001') throw error;
    setsIsolation.add(db);
    return open(true, fn);
  }
}

/**
 * `query` for transaction `tx`, asserting READ COMMITTED in the first statement of a transaction
 * readCommittedTransaction opened at the default level. A first statement that is not a SELECT
 * (none is today: it is the tenant's) is preceded by the assertion as a statement of its own.
 */
export function assertingReadCommitted(tx: object, query: TransactionClient['query']): TransactionClient['query'] {
  return async (text, values) => {
    if (!unchecked.delete(tx)) return query(text, values);
    try {
      if (LEADING_SELECT.test(text))
        return await query(
          text.replace(LEADING_SELECT, (select) => `${select}${ASSERT}, `),
          values,
        );
      await query(`SELECT ${ASSERT}`, []);
    } catch (error) {
      if (typeof error === 'object' && error !== null) firstStatementErrors.add(error);
      throw error;
    }
    return query(text, values);
  };
}
