/**
 * The second and last statement of a fresh call: turns the in-progress claim into the stored
 * outcome. A plain UPDATE of the row the claim inserted in this same transaction; none of the
 * columns it sets are indexed, so Postgres can make it a HOT update on the same page.
 */
import { sql, type Transaction } from 'kysely';
import { translateDatabaseError } from '../errors.ts';

export interface RecordId {
  tenantId: string;
  key: string;
  version: string;
}

/** `resultText` is the JSON text, or undefined when fn returned undefined (stored as SQL NULL). */
export async function storeResult(tx: Transaction<any>, id: RecordId, resultText: string | undefined): Promise<void> {
  try {
    await sql`
      UPDATE once.idempotency_keys
         SET status = 'completed', result = ${resultText ?? null}::jsonb, completed_at = now()
       WHERE tenant_id = ${id.tenantId} AND key = ${id.key} AND version = ${id.version}`.execute(tx);
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

export async function storeFailure(tx: Transaction<any>, id: RecordId, errorText: string): Promise<void> {
  try {
    await sql`
      UPDATE once.idempotency_keys
         SET status = 'failed', error = ${errorText}::jsonb, completed_at = now()
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
  const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
  await sql`SELECT once.abort_call(${text.slice(0, 500)})`.execute(tx).catch(() => {});
}
