/**
 * The statements of the two-phase mode after its claim committed, each guarded by the lease
 * token: a worker whose lease ran out and was taken over cannot renew, store or release anything
 * any more (fencing). Each returns whether this worker still held the lease.
 */
import { translateDatabaseError } from '../../errors.ts';
import type { TransactionClient } from '../../internal/transaction-client.ts';
import type { RateCharge, RecordId } from './store-outcome.ts';

async function guarded(tx: TransactionClient, text: string, values: readonly unknown[]): Promise<boolean> {
  try {
    return (await tx.query(text, values)).length === 1;
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

export const RENEW_LEASE_TEXT = `
  UPDATE once.idempotency_keys SET locked_until = clock_timestamp() + $5 * interval '1 millisecond'
   WHERE tenant_id = $1 AND key = $2 AND version = $3 AND status = 'in_progress' AND lease_token = $4
  RETURNING 1`;

export function renewLease(tx: TransactionClient, id: RecordId, token: string, leaseMs: number): Promise<boolean> {
  return guarded(tx, RENEW_LEASE_TEXT, [id.tenantId, id.key, id.version, token, leaseMs]);
}

export const STORE_LEASED_TEXT = `
  UPDATE once.idempotency_keys
     SET status = $5, result = $6::text::jsonb, result_text = $6, error = $7::text::jsonb, completed_at = now(),
         locked_until = NULL, lease_token = NULL
   WHERE tenant_id = $1 AND key = $2 AND version = $3 AND status = 'in_progress' AND lease_token = $4
  RETURNING 1`;

/** Stores the outcome: `status` 'completed' with the result text, or 'failed' with the error. */
export function storeLeased(
  tx: TransactionClient,
  id: RecordId,
  token: string,
  outcome: { status: 'completed'; resultText: string | undefined } | { status: 'failed'; errorText: string },
): Promise<boolean> {
  const result = outcome.status === 'completed' ? (outcome.resultText ?? null) : null;
  const error = outcome.status === 'failed' ? outcome.errorText : null;
  return guarded(tx, STORE_LEASED_TEXT, [id.tenantId, id.key, id.version, token, outcome.status, result, error]);
}

export const RELEASE_LEASE_TEXT = `
  DELETE FROM once.idempotency_keys
   WHERE tenant_id = $1 AND key = $2 AND version = $3 AND status = 'in_progress' AND lease_token = $4
  RETURNING 1`;

/** Gives the key back after fn failed (not stored): the next call executes afresh. */
export function releaseLease(tx: TransactionClient, id: RecordId, token: string): Promise<boolean> {
  return guarded(tx, RELEASE_LEASE_TEXT, [id.tenantId, id.key, id.version, token]);
}

/** A row only when the bucket was charged (sql/0015). */
export const CHARGE_BUCKET_TEXT = 'SELECT 1 WHERE once.charge_rate_limit($1, $2, $3, $4)';

/**
 * Charges a rate-limit bucket at claim time. Unlike the in-transaction mode (charged with the
 * result), the effect of a two-phase call leaves the database before its result is stored, so it
 * cannot be undone by losing the race for the last token afterwards: the token is taken first.
 */
export function chargeBucket(tx: TransactionClient, tenantId: string, charge: RateCharge): Promise<boolean> {
  return guarded(tx, CHARGE_BUCKET_TEXT, [tenantId, charge.tool, charge.emissionMs, charge.toleranceMs]);
}

export const DELETE_CLAIM_TEXT = 'DELETE FROM once.idempotency_keys WHERE tenant_id = $1 AND key = $2 AND version = $3';
export const RECORD_RATE_LIMITED_TEXT = "SELECT once.record_audit($1, $2, 'rate_limited', $3::text::jsonb)";

/**
 * A two-phase claim that lost the race for the bucket's last token: the claim is undone and the
 * refusal audited, as once.claim_key does for a claim over the limit (its detail names the
 * version and the bucket's tool).
 */
export async function giveBackRateLimited(tx: TransactionClient, id: RecordId, tool: string | undefined, charge: RateCharge): Promise<void> {
  await tx.query(DELETE_CLAIM_TEXT, [id.tenantId, id.key, id.version]);
  await tx.query(RECORD_RATE_LIMITED_TEXT, [id.key, tool ?? null, JSON.stringify({ version: id.version, limit_tool: charge.tool })]);
}
