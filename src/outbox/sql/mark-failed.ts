import type { RelayDatabase } from '../relay-pool.ts';
import { type LeaseRef, leaseArrays } from './event-refs.ts';

export interface Failure extends LeaseRef {
  /** Dead now (a permanent rejection, or the last attempt); else retried after `delayMs`. */
  dead: boolean;
  delayMs: number;
  error: string;
}

/**
 * Settles failed attempts in one statement (batched like mark-delivered.ts), fenced by the claim
 * (see event-refs.ts; so is the shape of its arrays): a relay whose lease lapsed must not reset, back off or kill an event that
 * another relay is delivering now.
 */
export const MARK_FAILED_TEXT = `
UPDATE once.outbox_events e
   SET status = CASE WHEN f.dead THEN 'dead' ELSE 'pending' END,
       next_attempt_at = now() + f.delay_ms * interval '1 millisecond',
       last_error = f.error, locked_by = NULL
  FROM unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::int[]), (SELECT $4::boolean[]), (SELECT $5::double precision[]), (SELECT $6::text[]))
       AS f(tenant_id, id, attempt, dead, delay_ms, error)
 WHERE e.tenant_id = f.tenant_id AND e.id = f.id
   AND e.status = 'pending' AND e.locked_by = $7 AND e.attempts = f.attempt`;

export async function markFailed(db: RelayDatabase, failures: readonly Failure[], relayId: string): Promise<void> {
  if (failures.length === 0) return;
  await db.query({
    name: 'once_mark_failed',
    text: MARK_FAILED_TEXT,
    values: [...leaseArrays(failures), failures.map((f) => f.dead), failures.map((f) => f.delayMs), failures.map((f) => f.error.slice(0, 2_000)), relayId],
  });
}
