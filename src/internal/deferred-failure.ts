/**
 * Errors that a deferred statement's failure became (TransactionClient.defer: the stored result
 * of a call, sent later with COMMIT or with the transaction's next statement). Such an error
 * surfaces from another statement: a library that wraps the errors of its own statements
 * (Drizzle) unwraps it, and the next call's claim passes it on as it is instead of reading it as
 * its own (a statement timeout of the earlier UPDATE is not "this key is in progress").
 */
import type { DeferredStatement, TransactionClient } from './transaction-client.ts';

const failures = new WeakSet<object>();

function markDeferredFailure<E>(error: E): E {
  if (typeof error === 'object' && error !== null) failures.add(error);
  return error;
}

/** Throws the error a deferred statement's failure becomes (its onError's), marked as such. */
export async function deferredFailure(statement: DeferredStatement, direct: TransactionClient, error: unknown): Promise<never> {
  try {
    return await statement.onError(error, direct);
  } catch (thrown) {
    throw markDeferredFailure(thrown);
  }
}

export const isDeferredFailure = (error: unknown): boolean => typeof error === 'object' && error !== null && failures.has(error);

/** SQLSTATE in_failed_sql_transaction: a statement refused because an earlier one aborted the transaction. */
export const IN_FAILED_TRANSACTION = '25P02';
