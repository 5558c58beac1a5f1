/**
 * The second and last statement of a fresh call: turns the in-progress claim into the stored
 * outcome. A plain UPDATE of the row the claim inserted in this same transaction; none of the
 * columns it sets are indexed, so Postgres can make it a HOT update on the same page.
 */
import { sql, type Transaction } from 'kysely';
import { translateDatabaseError } from '../errors.ts';
import { transactionState } from './transaction-state.ts';

export interface RecordId {
  tenantId: string;
  key: string;
  version: string;
}

/** A rate-limit bucket to charge with the result (from the claim). */
export interface RateCharge {
  tool: string;
  emissionMs: number;
  toleranceMs: number;
}

/**
 * `resultText` is the JSON text, or undefined when fn returned undefined (stored as SQL NULL).
 * Under a rate limit the same statement charges the tenant's bucket, if a token is still free:
 * returns false when the call lost the race for the last token (nothing was stored).
 */
export async function storeResult(
  tx: Transaction<any>,
  id: RecordId,
  resultText: string | undefined,
  charge: RateCharge | undefined,
): Promise<boolean> {
  try {
    if (!charge) {
      await sql`
        UPDATE once.idempotency_keys
           SET status = 'completed', result = ${resultText ?? null}::jsonb, result_text = ${resultText ?? null},
               lease_token = NULL, completed_at = now()
         WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}`.execute(tx);
      return true;
    }
    // The bucket row is locked from here to commit only: the check at claim time took no lock,
    // so a tenant's calls never wait on each other while fn runs.
    const { rows } = await sql`
      WITH charged AS (
        INSERT INTO once.rate_limit_state AS s (tenant_id, tool, tat)
        VALUES (${id.tenantId}, ${charge.tool}, clock_timestamp() + ${charge.emissionMs} * interval '1 millisecond')
        ON CONFLICT (tenant_id, tool) DO UPDATE
           SET tat = greatest(s.tat, clock_timestamp()) + ${charge.emissionMs} * interval '1 millisecond'
         WHERE greatest(s.tat, clock_timestamp()) - clock_timestamp() <= ${charge.toleranceMs} * interval '1 millisecond'
        RETURNING 1
      )
      UPDATE once.idempotency_keys
         SET status = 'completed', result = ${resultText ?? null}::jsonb, result_text = ${resultText ?? null},
             lease_token = NULL, completed_at = now()
       WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}
         AND EXISTS (SELECT 1 FROM charged)
      RETURNING 1`.execute(tx);
    return rows.length === 1;
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

export async function storeFailure(tx: Transaction<any>, id: RecordId, errorText: string): Promise<void> {
  try {
    await sql`
      UPDATE once.idempotency_keys
         SET status = 'failed', error = ${errorText}::jsonb, lease_token = NULL, completed_at = now()
       WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}`.execute(tx);
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

/**
 * Aborts the transaction on purpose (see once.abort_call) after a failed call, so its claim and
 * partial writes can never commit. Its own error is the point, and is swallowed; so is the
 * "transaction is aborted" error when fn's failure already aborted it.
 */
export async function abortCall(tx: Transaction<any>, reason: unknown): Promise<void> {
  // Remembered so that what the caller sees next in this transaction (SQLSTATE 25P02, or Kysely's
  // AbortedTransactionError at commit) is reported as CALL_ABORTED, with this call's error.
  const state = transactionState(tx);
  if (state) state.abortedBy ??= { error: reason };
  const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
  await sql`SELECT once.abort_call(${text.slice(0, 500)})`.execute(tx).catch(() => {});
}

/**
 * After `fn` ended the transaction itself (COMMIT or ROLLBACK), the connection runs statements
 * outside any transaction, without a tenant. A COMMIT made the claim durable as in progress, with
 * no lease: every retry would answer IDEMPOTENCY_IN_PROGRESS for the record's whole ttl. It is
 * stored as failed instead (fn's committed writes must not run a second time), in one statement
 * that sets the tenant for itself (see once.fail_ended_call). After a ROLLBACK there is no record
 * and nothing to do.
 */
export async function failEndedCall(tx: Transaction<any>, id: RecordId, errorText: string): Promise<void> {
  await sql`SELECT once.fail_ended_call(${id.tenantId}, ${id.key}, ${id.version}, ${errorText}::jsonb)`.execute(tx).catch(() => {});
}
