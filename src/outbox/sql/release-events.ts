import type { RelayDatabase } from '../relay-pool.ts';
import { type LeaseRef, leaseArrays } from './event-refs.ts';

/**
 * Gives events back without an outcome (graceful shutdown cut their delivery short): due at once,
 * and the attempt that was interrupted is not counted, so another relay takes them immediately.
 * Fenced by the claim (see event-refs.ts).
 */
export const RELEASE_EVENTS_TEXT = `
UPDATE once.outbox_events e
   SET next_attempt_at = now(), locked_by = NULL, attempts = greatest(e.attempts - 1, 0)
  FROM unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::int[])) AS r(tenant_id, id, attempt)
 WHERE e.tenant_id = r.tenant_id AND e.id = r.id
   AND e.status = 'pending' AND e.locked_by = $4 AND e.attempts = r.attempt`;

export async function releaseEvents(db: RelayDatabase, events: readonly LeaseRef[], relayId: string): Promise<void> {
  if (events.length === 0) return;
  // The arrays through sub-selects: see event-refs.ts.
  await db.query({ name: 'once_release_events', text: RELEASE_EVENTS_TEXT, values: [...leaseArrays(events), relayId] });
}
