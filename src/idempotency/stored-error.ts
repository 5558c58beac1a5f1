/**
 * A failure stored by `storeError`, and the equivalent error every replay re-throws: same name,
 * message and code (and httpStatus/retryable when the original had them). It is a
 * `StoredCallError`, not an instance of the original class, which cannot be revived from JSON.
 */
import type { StoredError } from './sql/claim-key.ts';

export class StoredCallError extends Error {
  readonly code: string | number | undefined;
  readonly httpStatus: number | undefined;
  readonly retryable: boolean | undefined;
  /** Always true: this error was read back from the idempotency record, not thrown by fn now. */
  readonly replayed = true;

  constructor(stored: StoredError) {
    super(stored.message);
    this.name = stored.name;
    this.code = stored.code;
    this.httpStatus = stored.httpStatus;
    this.retryable = stored.retryable;
  }
}

export function describeError(error: unknown): StoredError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) };
  const { code, httpStatus, retryable } = error as { code?: unknown; httpStatus?: unknown; retryable?: unknown };
  return {
    name: error.name,
    message: error.message,
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    ...(typeof httpStatus === 'number' ? { httpStatus } : {}),
    ...(typeof retryable === 'boolean' ? { retryable } : {}),
  };
}
