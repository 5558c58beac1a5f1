import type { RelayDatabase } from '../relay-pool.ts';
import { type LeaseRef, leaseArrays } from './event-refs.ts';

/**
 * Settles delivered events, any number in one statement: the relay gathers the outcomes that
 * arrive while the previous statement runs, so under load one round trip settles many events, and
 * when idle it settles one at once. Fenced by the claim (see event-refs.ts; so is the shape of its arrays): an event whose lease
 * lapsed and that another relay claimed is theirs to settle; this delivery was a duplicate the
 * receiver drops by dedupe id.
 */
export const MARK_DELIVERED_TEXT = `
UPDATE once.outbox_events e
   SET status = 'delivered', delivered_at = now(), locked_by = NULL
  FROM unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::int[])) AS d(tenant_id, id, attempt)
 WHERE e.tenant_id = d.tenant_id AND e.id = d.id
   AND e.status = 'pending' AND e.locked_by = $4 AND e.attempts = d.attempt`;

export async function markDelivered(db: RelayDatabase, events: readonly LeaseRef[], relayId: string): Promise<void> {
  if (events.length === 0) return;
  await db.query({ name: 'once_mark_delivered', text: MARK_DELIVERED_TEXT, values: [...leaseArrays(events), relayId] });
}
