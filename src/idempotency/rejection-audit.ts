/**
 * 409s in the audit trail: a call refused with IDEMPOTENCY_IN_PROGRESS leaves a `dedupe_audit`
 * row of kind 'in_progress' (sql/0011), which `pg-once status` and the dashboard count.
 *
 * The refusal is thrown inside the caller's transaction, and that transaction must roll back: the
 * error is retryable, so anything it committed (the caller's writes before the call) would be
 * written again by the retry. So the row cannot be written there, as the rows of replays and
 * reused keys are; withTenant writes it after the rollback, in a short transaction of its own
 * under the same tenant. Only calls whose transaction withTenant opened are counted (a pg client
 * already inside the caller's own transaction has no such second chance), and only as a
 * best effort: a failure to record never replaces the caller's error.
 */
import type { IdempotencyInProgressError } from '../errors.ts';
import type { Driver } from '../internal/driver.ts';
import type { ClaimRequest } from './claim.ts';
import { type Rejection, recordRejectionRow } from './sql/record-rejection.ts';

const rejections = new WeakMap<object, Rejection>();

/** Marks `error` as the refusal of `request`, for withTenant to record once its transaction is over. */
export function noteRejection(error: IdempotencyInProgressError, request: ClaimRequest): IdempotencyInProgressError {
  rejections.set(error, { key: request.key, tool: request.tool, version: request.version, retryAfterMs: error.retryAfterMs });
  return error;
}

/**
 * Writes the audit row of a refusal noted on `error`, if any. `setTenant` is withTenant's own
 * first statement (the tenant and the role check), so the row is under the same policies.
 */
export async function recordRejection<Db extends object, Tx extends object>(
  driver: Driver<Db, Tx>,
  db: Db,
  error: unknown,
  setTenant: (client: NonNullable<ReturnType<Driver<Db, Tx>['client']>>) => Promise<void>,
): Promise<void> {
  const rejection = typeof error === 'object' && error !== null ? rejections.get(error) : undefined;
  if (!rejection) return;
  rejections.delete(error as object);
  try {
    await driver.transaction(db, async (tx) => {
      const client = driver.client(tx)!;
      await setTenant(client);
      await recordRejectionRow(client, rejection);
    });
  } catch {
    // Best effort: the caller gets its IDEMPOTENCY_IN_PROGRESS whatever happens here.
  }
}
