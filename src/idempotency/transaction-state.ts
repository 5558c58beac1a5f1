/**
 * What withTenant knows about a transaction it opened, for the calls made in it: the pool it came
 * from (waits are bounded per pool, see wait-slots.ts), how long the caller queued for the
 * connection (part of the `waitMs` budget), and what happened to it (a call that aborted it, a
 * recorded failure that must commit). Keyed by the Transaction object withTenant passes to its
 * callback; a transaction the caller opened itself has no state, and the calls in it fall back to
 * what they can know alone.
 */
import type { Kysely, Transaction } from 'kysely';

export interface TransactionState {
  db: Kysely<any>;
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

const states = new WeakMap<Transaction<any>, TransactionState>();

export function setTransactionState(tx: Transaction<any>, state: TransactionState): void {
  states.set(tx, state);
}

export function transactionState(tx: Transaction<any>): TransactionState | undefined {
  return states.get(tx);
}
