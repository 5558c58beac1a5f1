/**
 * Errors that are OUTCOMES of a call rather than accidents: a failure the caller chose to store
 * (`storeError`), its replays, and a key reused with another request. Each has written something
 * that must survive the error (the `failed` record, an audit row), so the transaction must commit
 * even though the error propagates. withTenant does that for errors marked here; callers running
 * their own transaction check `isRecordedFailure(error)` before deciding to roll back.
 */
const recorded = new WeakSet<object>();

export function markRecordedFailure<E>(error: E): E {
  if (typeof error === 'object' && error !== null) recorded.add(error);
  return error;
}

/** True when `error` came out of runIdempotent as a recorded outcome: commit, then handle it. */
export function isRecordedFailure(error: unknown): boolean {
  return typeof error === 'object' && error !== null && recorded.has(error);
}
