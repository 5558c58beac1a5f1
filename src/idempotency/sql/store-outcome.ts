/**
 * The second and last statement of a fresh call: turns the in-progress claim into the stored
 * outcome. A plain UPDATE of the row the claim inserted in this same transaction; none of the
 * columns it sets are indexed, so Postgres can make it a HOT update on the same page.
 */
import { translateDatabaseError } from '../../errors.ts';
import type { Statement } from '../../internal/inline-values.ts';
import type { TransactionClient } from '../../internal/transaction-client.ts';
import { transactionState } from '../transaction-state.ts';

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
export const STORE_RESULT_TEXT = `
  UPDATE once.idempotency_keys
     SET status = 'completed', result = $4::text::jsonb, result_text = $4, lease_token = NULL, completed_at = now()
   WHERE tenant_id = $1 AND key = $2 AND version = $3`;

// The bucket row is locked from here to commit only: the check at claim time took no lock,
// so a tenant's calls never wait on each other while fn runs. The charge (sql/0015) is a filter
// of the one row the claim wrote in this transaction, so it runs once, and only the row of a
// charged call is stored; no concurrent writer can touch that row, so it is never re-checked.
export const STORE_RESULT_CHARGED_TEXT = `
  UPDATE once.idempotency_keys
     SET status = 'completed', result = $4::text::jsonb, result_text = $4, lease_token = NULL, completed_at = now()
   WHERE tenant_id = $1 AND key = $2 AND version = $3
     AND once.charge_rate_limit($1, $5, $6, $7)
  RETURNING 1`;

/** The uncharged store as a statement, for a transaction that can defer it (TransactionClient.defer). */
export function storeResultStatement(id: RecordId, resultText: string | undefined): Statement {
  return { text: STORE_RESULT_TEXT, values: [id.tenantId, id.key, id.version, resultText ?? null] };
}

export async function storeResult(tx: TransactionClient, id: RecordId, resultText: string | undefined, charge: RateCharge | undefined): Promise<boolean> {
  try {
    const { values: record } = storeResultStatement(id, resultText);
    if (!charge) {
      await tx.query(STORE_RESULT_TEXT, record);
      return true;
    }
    const rows = await tx.query(STORE_RESULT_CHARGED_TEXT, [...record, charge.tool, charge.emissionMs, charge.toleranceMs]);
    return rows.length === 1;
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

export const STORE_FAILURE_TEXT = `
  UPDATE once.idempotency_keys
     SET status = 'failed', error = $4::text::jsonb, lease_token = NULL, completed_at = now()
   WHERE tenant_id = $1 AND key = $2 AND version = $3`;

export async function storeFailure(tx: TransactionClient, id: RecordId, errorText: string): Promise<void> {
  try {
    await tx.query(STORE_FAILURE_TEXT, [id.tenantId, id.key, id.version, errorText]);
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

/**
 * Aborts the transaction on purpose (see once.abort_call) after a failed call, so its claim and
 * partial writes can never commit. Its own error is the point, and is swallowed; so is the
 * "transaction is aborted" error when fn's failure already aborted it.
 */
export async function abortCall(tx: TransactionClient, reason: unknown): Promise<void> {
  // Remembered so that what the caller sees next in this transaction (SQLSTATE 25P02, or Kysely's
  // AbortedTransactionError at commit) is reported as CALL_ABORTED, with this call's error.
  const state = transactionState(tx.owner);
  if (state) state.abortedBy ??= { error: reason };
  const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
  await tx.query('SELECT once.abort_call($1)', [text.slice(0, 500)]).catch(() => {});
}

/**
 * After `fn` ended the transaction itself (COMMIT or ROLLBACK), the connection runs statements
 * outside any transaction, without a tenant. A COMMIT made the claim durable as in progress, with
 * no lease: every retry would answer IDEMPOTENCY_IN_PROGRESS for the record's whole ttl. It is
 * stored as failed instead (fn's committed writes must not run a second time), in one statement
 * that sets the tenant for itself (see once.fail_ended_call). After a ROLLBACK there is no record
 * and nothing to do.
 */
export async function failEndedCall(tx: TransactionClient, id: RecordId, errorText: string): Promise<void> {
  await tx.query('SELECT once.fail_ended_call($1, $2, $3, $4::text::jsonb)', [id.tenantId, id.key, id.version, errorText]).catch(() => {});
}
