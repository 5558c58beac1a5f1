/**
 * What withTenant knows about a transaction it opened, for the calls made in it: the pool it came
 * from (waits are bounded per pool, see wait-slots.ts), how long the caller queued for the
 * connection (part of the `waitMs` budget), and what happened to it (a call that aborted it, a
 * recorded failure that must commit). Keyed by the transaction object withTenant passes to its
 * callback (a Kysely Transaction, a pg PoolClient, a Knex trx, ...); a transaction the caller
 * opened itself has no state, and the calls in it fall back to what they can know alone.
 */

export interface TransactionState {
  /** The pool (database handle) the transaction came from. */
  db: object;
  tenantId: string;
  /** Milliseconds the caller waited for a pooled connection before the transaction began. */
  poolWaitMs: number;
  /** The error of the idempotent call that aborted the transaction on purpose (once.abort_call). */
  abortedBy?: { error: unknown };
  /**
   * Recorded failures (see recorded-failure.ts) that cannot be marked because they are not
   * objects (a thrown string): withTenant commits before re-throwing these too.
   */
  recordedValues?: unknown[];
}

const states = new WeakMap<object, TransactionState>();

export function setTransactionState(tx: object, state: TransactionState): void {
  states.set(tx, state);
}

/**
 * Forgets `tx`'s state when its transaction ends: a pg PoolClient is the key of every transaction
 * it runs, and must not carry one transaction's abort or recorded failures into the next.
 */
export function clearTransactionState(tx: object): void {
  states.delete(tx);
}

export function transactionState(tx: object): TransactionState | undefined {
  return states.get(tx);
}
