import type pg from 'pg';
import { type EventRef, refArrays } from './event-refs.ts';

/**
 * The heartbeat: pushes the lease (next_attempt_at) of events this relay holds further out, so a
 * slow but live delivery (or one waiting to be settled) is never taken over. Only rows still
 * leased by this relay: one whose lease already ran out and was claimed by another relay stays
 * theirs. SKIP LOCKED: a row being settled right now needs no renewal, and waiting for it while
 * the settle statement waits for a row locked here would deadlock (seen under load).
 */
const TEXT = `
WITH held AS (
  SELECT e.tenant_id, e.id
    FROM once.outbox_events e
    JOIN unnest($1::text[], $2::bigint[]) AS r(tenant_id, id) ON e.tenant_id = r.tenant_id AND e.id = r.id
   WHERE e.status = 'pending' AND e.locked_by = $4
   FOR UPDATE OF e SKIP LOCKED
)
UPDATE once.outbox_events e
   SET next_attempt_at = now() + $3 * interval '1 millisecond'
  FROM held h
 WHERE e.tenant_id = h.tenant_id AND e.id = h.id`;

export async function renewLeases(pool: pg.Pool, events: readonly EventRef[], leaseMs: number, relayId: string): Promise<void> {
  if (events.length === 0) return;
  await pool.query(TEXT, [...refArrays(events), leaseMs, relayId]);
}
