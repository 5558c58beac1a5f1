import type { RelayDatabase } from '../relay-pool.ts';
import { type EventRef, type LeaseRef, leaseArrays } from './event-refs.ts';

/**
 * The heartbeat: pushes the lease (next_attempt_at) of events this relay holds further out, each
 * by its own lease (short for queued events, leaseMs for started ones; see lease-plan.ts), so a
 * slow but live delivery (or one waiting to be settled) is never taken over. Fenced by the claim
 * (see event-refs.ts; so is the shape of its arrays): an event whose lease already ran out and was claimed again, by another
 * relay or by this one, belongs to that newer claim. SKIP LOCKED: a row being settled right now
 * needs no renewal, and waiting for it while the settle statement waits for a row locked here
 * would deadlock (seen under load). Returns the events renewed, each with its row's new ctid (the
 * renewal moves the row: next_attempt_at is indexed), which the settle looks for first.
 */
export const RENEW_LEASES_TEXT = `
WITH held AS (
  SELECT e.tenant_id, e.id, r.lease_ms
    FROM once.outbox_events e
    JOIN unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::int[]), (SELECT $4::int[])) AS r(tenant_id, id, attempt, lease_ms)
      ON e.tenant_id = r.tenant_id AND e.id = r.id AND e.attempts = r.attempt
   WHERE e.status = 'pending' AND e.locked_by = $5
   FOR UPDATE OF e SKIP LOCKED
)
UPDATE once.outbox_events e
   SET next_attempt_at = now() + h.lease_ms * interval '1 millisecond'
  FROM held h
 WHERE e.tenant_id = h.tenant_id AND e.id = h.id
RETURNING e.tenant_id, e.id, e.ctid AS tid`;

export async function renewLeases(
  db: RelayDatabase,
  leases: readonly (LeaseRef & { leaseMs: number })[],
  relayId: string,
): Promise<(EventRef & { tid: string })[]> {
  if (leases.length === 0) return [];
  const { rows } = await db.query<{ tenant_id: string; id: string; tid: string }>({
    name: 'once_renew_leases',
    text: RENEW_LEASES_TEXT,
    values: [...leaseArrays(leases), leases.map((lease) => lease.leaseMs), relayId],
  });
  return rows.map((row) => ({ tenantId: row.tenant_id, id: String(row.id), tid: row.tid }));
}
