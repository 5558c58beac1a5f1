/**
 * The statements of the two-phase mode after its claim committed, each guarded by the lease
 * token: a worker whose lease ran out and was taken over cannot renew, store or release anything
 * any more (fencing). Each returns whether this worker still held the lease.
 */
import { sql, type Transaction } from 'kysely';
import { translateDatabaseError } from '../errors.ts';
import type { RecordId } from './store-outcome.ts';

async function guarded(run: () => Promise<{ rows: unknown[] }>): Promise<boolean> {
  try {
    return (await run()).rows.length === 1;
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

export function renewLease(tx: Transaction<any>, id: RecordId, token: string, leaseMs: number): Promise<boolean> {
  return guarded(() =>
    sql`UPDATE once.idempotency_keys SET locked_until = clock_timestamp() + ${leaseMs} * interval '1 millisecond'
         WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}
           AND status = 'in_progress' AND lease_token = ${token}
        RETURNING 1`.execute(tx),
  );
}

/** Stores the outcome: `status` 'completed' with the result text, or 'failed' with the error. */
export function storeLeased(
  tx: Transaction<any>,
  id: RecordId,
  token: string,
  outcome: { status: 'completed'; resultText: string | undefined } | { status: 'failed'; errorText: string },
): Promise<boolean> {
  const result = outcome.status === 'completed' ? (outcome.resultText ?? null) : null;
  const error = outcome.status === 'failed' ? outcome.errorText : null;
  return guarded(() =>
    sql`UPDATE once.idempotency_keys
           SET status = ${outcome.status}, result = ${result}::jsonb, result_text = ${result}, error = ${error}::jsonb, completed_at = now(),
               locked_until = NULL, lease_token = NULL
         WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}
           AND status = 'in_progress' AND lease_token = ${token}
        RETURNING 1`.execute(tx),
  );
}

/** Gives the key back after fn failed (not stored): the next call executes afresh. */
export function releaseLease(tx: Transaction<any>, id: RecordId, token: string): Promise<boolean> {
  return guarded(() =>
    sql`DELETE FROM once.idempotency_keys
         WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}
           AND status = 'in_progress' AND lease_token = ${token}
        RETURNING 1`.execute(tx),
  );
}

/**
 * Charges a rate-limit bucket at claim time. Unlike the in-transaction mode (charged with the
 * result), the effect of a two-phase call leaves the database before its result is stored, so it
 * cannot be undone by losing the race for the last token afterwards: the token is taken first.
 */
export function chargeBucket(tx: Transaction<any>, tenantId: string, charge: { tool: string; emissionMs: number; toleranceMs: number }): Promise<boolean> {
  return guarded(() =>
    sql`INSERT INTO once.rate_limit_state AS s (tenant_id, tool, tat)
        VALUES (${tenantId}, ${charge.tool}, clock_timestamp() + ${charge.emissionMs} * interval '1 millisecond')
        ON CONFLICT (tenant_id, tool) DO UPDATE
           SET tat = greatest(s.tat, clock_timestamp()) + ${charge.emissionMs} * interval '1 millisecond'
         WHERE greatest(s.tat, clock_timestamp()) - clock_timestamp() <= ${charge.toleranceMs} * interval '1 millisecond'
        RETURNING 1`.execute(tx),
  );
}
