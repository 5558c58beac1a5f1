import type pg from 'pg';
import { type EventRef, refArrays } from './event-refs.ts';

/**
 * Settles delivered events, any number in one statement: the relay gathers the outcomes that
 * arrive while the previous statement runs, so under load one round trip settles many events, and
 * when idle it settles one at once. `status = 'pending'` leaves alone an event that another relay
 * (after this one's lease ran out) has settled already.
 */
const TEXT = `
UPDATE once.outbox_events e
   SET status = 'delivered', delivered_at = now(), locked_by = NULL
  FROM unnest($1::text[], $2::bigint[]) AS d(tenant_id, id)
 WHERE e.tenant_id = d.tenant_id AND e.id = d.id AND e.status = 'pending'`;

export async function markDelivered(pool: pg.Pool, events: readonly EventRef[]): Promise<void> {
  if (events.length === 0) return;
  await pool.query({ name: 'once_mark_delivered', text: TEXT, values: refArrays(events) });
}
