/**
 * Errors that are OUTCOMES of a call rather than accidents: a failure the caller chose to store
 * (`storeError`), its replays, and a key reused with another request. Each has written something
 * that must survive the error (the `failed` record, an audit row), so the transaction must commit
 * even though the error propagates. withTenant does that for errors marked here; callers running
 * their own transaction check `isRecordedFailure(error)` before deciding to roll back.
 */
import { transactionState } from './transaction-state.ts';

const recorded = new WeakSet<object>();

export function markRecordedFailure<E>(error: E): E {
  if (typeof error === 'object' && error !== null) recorded.add(error);
  return error;
}

/** True when `error` came out of runIdempotent as a recorded outcome: commit, then handle it. */
export function isRecordedFailure(error: unknown): boolean {
  return typeof error === 'object' && error !== null && recorded.has(error);
}

/**
 * markRecordedFailure for an error thrown in `tx`: a thrown value that is not an object (a string,
 * a number) cannot be marked, so it is noted on the transaction instead, where withTenant looks
 * (see isRecordedIn). Without it, withTenant rolled back the failure it had just stored.
 */
export function recordFailure<E>(tx: object, error: E): E {
  if (typeof error === 'object' && error !== null) return markRecordedFailure(error);
  const state = transactionState(tx);
  if (state) {
    state.recordedValues ??= [];
    state.recordedValues.push(error);
  }
  return error;
}

/** True when `error` is a recorded outcome of a call made in `tx`. */
export function isRecordedIn(tx: object, error: unknown): boolean {
  return isRecordedFailure(error) || transactionState(tx)?.recordedValues?.includes(error) === true;
}
