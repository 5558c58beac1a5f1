import type pg from 'pg';
import type { DeliveryEvent } from '../sink.ts';

export interface ClaimedEvent extends DeliveryEvent {
  /** This attempt's number (attempts are counted when claimed). */
  attempt: number;
}

interface Row {
  tenant_id: string;
  id: string;
  dedupe_id: string;
  topic: string;
  ordering_key: string | null;
  payload: unknown;
  headers: Record<string, string>;
  attempts: number;
  created_at: Date;
}

/**
 * Claims up to `limit` deliverable events for this relay and leases them: next_attempt_at moves to
 * now() + leaseMs, which takes them out of every relay's scan until the lease runs out (or is
 * renewed by the heartbeat, or the event is settled).
 *
 * Deliverable: pending, due (next_attempt_at passed: no backoff or live lease), and, for an event
 * with an ordering key, the head of its key (no earlier pending event of the same tenant and key).
 * So a key has at most one event in flight, a failing event holds back only its own key, and events
 * without a key flow in parallel. The scan follows the (next_attempt_at, id) index and stops at
 * `limit`; events in backoff or in flight lie beyond now() and cost nothing.
 *
 * FOR UPDATE SKIP LOCKED makes concurrent relays take disjoint batches without waiting for each
 * other; the row lock lasts only this statement, the lease does the rest. Attempts are counted
 * here, so an event that crashes relays still reaches max attempts instead of looping forever.
 * Named: the relay's hottest statement, parsed and planned once per connection.
 */
const TEXT = `
WITH candidates AS (
  SELECT e.tenant_id, e.id
    FROM once.outbox_events e
   WHERE e.status = 'pending'
     AND e.next_attempt_at <= now()
     AND (e.ordering_key IS NULL OR NOT EXISTS (
           SELECT 1 FROM once.outbox_events p
            WHERE p.tenant_id = e.tenant_id AND p.ordering_key = e.ordering_key
              AND p.status = 'pending' AND p.id < e.id))
   ORDER BY e.next_attempt_at, e.id
   LIMIT $1
   FOR UPDATE SKIP LOCKED
)
UPDATE once.outbox_events e
   SET next_attempt_at = now() + $2 * interval '1 millisecond', locked_by = $3, attempts = e.attempts + 1
  FROM candidates c
 WHERE e.tenant_id = c.tenant_id AND e.id = c.id
RETURNING e.tenant_id, e.id, e.dedupe_id, e.topic, e.ordering_key, e.payload, e.headers, e.attempts, e.created_at`;

export async function claimEvents(pool: pg.Pool, limit: number, leaseMs: number, relayId: string): Promise<ClaimedEvent[]> {
  const { rows } = await pool.query<Row>({ name: 'once_claim_events', text: TEXT, values: [limit, leaseMs, relayId] });
  // RETURNING follows no order; deliveries start in id order.
  rows.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  return rows.map((row) => ({
    id: String(row.id),
    dedupeId: row.dedupe_id,
    tenantId: row.tenant_id,
    topic: row.topic,
    orderingKey: row.ordering_key,
    payload: row.payload,
    headers: row.headers,
    createdAt: row.created_at,
    attempt: row.attempts,
  }));
}
