import type pg from 'pg';
import { type LeaseRef, leaseArrays } from './event-refs.ts';

/**
 * The heartbeat: pushes the lease (next_attempt_at) of events this relay holds further out, so a
 * slow but live delivery (or one waiting to be settled) is never taken over. Fenced by the claim
 * (see event-refs.ts): an event whose lease already ran out and was claimed again, by another
 * relay or by this one, belongs to that newer claim. SKIP LOCKED: a row being settled right now needs no renewal, and waiting for it while
 * the settle statement waits for a row locked here would deadlock (seen under load).
 */
const TEXT = `
WITH held AS (
  SELECT e.tenant_id, e.id
    FROM once.outbox_events e
    JOIN unnest($1::text[], $2::bigint[], $3::int[]) AS r(tenant_id, id, attempt)
      ON e.tenant_id = r.tenant_id AND e.id = r.id AND e.attempts = r.attempt
   WHERE e.status = 'pending' AND e.locked_by = $5
   FOR UPDATE OF e SKIP LOCKED
)
UPDATE once.outbox_events e
   SET next_attempt_at = now() + $4 * interval '1 millisecond'
  FROM held h
 WHERE e.tenant_id = h.tenant_id AND e.id = h.id`;

export async function renewLeases(pool: pg.Pool, events: readonly LeaseRef[], leaseMs: number, relayId: string): Promise<void> {
  if (events.length === 0) return;
  await pool.query(TEXT, [...leaseArrays(events), leaseMs, relayId]);
}
