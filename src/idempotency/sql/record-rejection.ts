/** The audit row of a duplicate refused with IDEMPOTENCY_IN_PROGRESS (see ../rejection-audit.ts for when it is written). */
import type { TransactionClient } from '../../internal/transaction-client.ts';

export interface Rejection {
  key: string;
  tool: string | undefined;
  version: string;
  retryAfterMs: number;
}

/** A row of kind 'in_progress' (sql/0011) under the transaction's tenant, through once.record_audit (sql/0015). */
export const RECORD_REJECTION_TEXT = `
  SELECT once.record_audit($1, $2, 'in_progress', jsonb_build_object('version', $3::text, 'retry_after_ms', $4::float8))`;

export async function recordRejectionRow(tx: TransactionClient, rejection: Rejection): Promise<void> {
  await tx.query(RECORD_REJECTION_TEXT, [rejection.key, rejection.tool ?? null, rejection.version, rejection.retryAfterMs]);
}
