import type pg from 'pg';
import { type EventRef, refArrays } from './event-refs.ts';

/**
 * The heartbeat: pushes the lease (next_attempt_at) of events this relay is still delivering
 * further out, so a slow but live delivery is never taken over. Only rows still leased by this
 * relay: one whose lease already ran out and was claimed by another relay stays theirs.
 */
const TEXT = `
UPDATE once.outbox_events e
   SET next_attempt_at = now() + $3 * interval '1 millisecond'
  FROM unnest($1::text[], $2::bigint[]) AS r(tenant_id, id)
 WHERE e.tenant_id = r.tenant_id AND e.id = r.id AND e.status = 'pending' AND e.locked_by = $4`;

export async function renewLeases(pool: pg.Pool, events: readonly EventRef[], leaseMs: number, relayId: string): Promise<void> {
  if (events.length === 0) return;
  await pool.query(TEXT, [...refArrays(events), leaseMs, relayId]);
}
