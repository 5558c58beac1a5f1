import pg from 'pg';

const pgTypes = pg.types;
import { orderingKeyOf } from '../key-runs.ts';
import type { RelayDatabase } from '../relay-pool.ts';
import type { DeliveryEvent } from '../sink.ts';
import { keyOf } from './event-refs.ts';

export interface ClaimedEvent extends DeliveryEvent {
  /** This attempt's number (attempts are counted when claimed). */
  attempt: number;
  /** Cut short more than once (see TEXT): deliver it with nothing else in flight. */
  cutShort: boolean;
  /** When the lease runs out, by the host clock (epoch ms; counted from when the claim was sent). */
  leaseUntil: number;
  /** Size of the payload and headers as JSON text (what the relay holds in memory), in bytes. */
  bytes: number;
  /** Where the claimed row version lies (its ctid, as text): see HeldLease.tid. */
  tid: string;
  /** eventKey(this), made once (see EventRef.key). */
  key: string;
}

/** What a claim returns: events to deliver, and events it found out of attempts and declared dead. */
export interface Claim {
  /** Unkeyed events and key heads, in id order: deliverable now. */
  events: ClaimedEvent[];
  /**
   * The rest of each key's run, in id order: each deliverable only once the event of its key
   * before it was delivered (see `followers` above).
   */
  followers: ClaimedEvent[];
  /** Claimed and not to be delivered (a run with a hole; see claimEvents): hand back at once. */
  stray: ClaimedEvent[];
  /** Events whose last attempt was cut short (a crash, a kill): dead now, not delivered. */
  exhausted: ClaimedEvent[];
  /** The last tenant this claim served, in its round-robin order: where the next claim starts. */
  lastTenant: string;
}

interface Row {
  tenant_id: string;
  id: string;
  dedupe_id: string;
  topic: string;
  ordering_key: string | null;
  /** Only for rows written before sql/0009 (payload_text NULL); otherwise null, not sent twice. */
  payload: SizedJson | null;
  /** The payload's JSON text as enqueue wrote it (sql/0009). */
  payload_text: string | null;
  headers: SizedJson;
  attempts: number;
  status: 'pending' | 'dead';
  cut_short: boolean;
  /** 0: a head or an unkeyed event; n: the nth follower in its key's run. */
  position: number;
  created_ms: number;
  /** The claimed row version's ctid, as text ('(page,item)'). */
  tid: string;
}

/**
 * Claims up to `limit` deliverable events for this relay and leases them: next_attempt_at moves to
 * now() + leaseMs, which takes them out of every relay's scan until the lease runs out (or is
 * renewed by the heartbeat, or the event is settled).
 *
 * Deliverable: pending, due (next_attempt_at passed: no backoff or live lease), and, for an event
 * with an ordering key, the head of its key (no earlier pending event of the same tenant and key).
 * So a key has at most one event in flight, a failing event holds back only its own key, and events
 * without a key flow in parallel.
 *
 * Fair across tenants, and blind to blocked keys: not one global oldest-first scan (in which a
 * tenant's backlog of 20,000 holds back another tenant's single new event until the backlog is
 * gone, and every due follower of a backing-off key head is read and rejected on every poll):
 * - `tenants` walks the tenants that have pending events without a key, a skip scan over the
 *   (tenant_id, next_attempt_at, id) index (sql/0006): one probe per tenant, however many events,
 *   which also reads the tenant's earliest next_attempt_at (its first entry);
 * - `heads` walks the ordering keys that have pending events, a skip scan over the
 *   (tenant_id, ordering_key, id) INCLUDE (next_attempt_at) index: one probe per key, reading only
 *   the key's head (its oldest pending event), so followers cost nothing, due or not;
 * - `due` keeps the tenants with a due event or a due head, starting after `$5`, the last tenant
 *   the previous claim served (round-robin when there are more due tenants than `limit`);
 * - each gets an equal share of `limit` (at least one) of its unkeyed events, oldest first, read
 *   from the same index (a backlog costs its share; the rows beyond it are never read), and as
 *   many of its due heads (so a claim may bring up to twice `limit` when tenants have both).
 * - `followers`: each key head claimed (not cut short) brings the run of its key's next pending
 *   events, in id order, up to $6 per key and, over all keys, what the heads left of `limit`,
 *   stopping at the first that is not due, is out of attempts or was cut short twice (such an
 *   event comes only as a head, alone if need be). They are read without a row lock: the head's
 *   lock keeps every other claim off the key (a claim takes a key only through its head), and
 *   nothing else changes a pending follower. The relay delivers a run one event after another
 *   (key-runs.ts): one key's throughput was one event per claim-and-settle round trip, about 60
 *   a second, and is now a run per round trip. `position` says where each row stands in its run
 *   (0: a head or an unkeyed event).
 * The cost of a claim grows with the number of tenants and keys that have pending events (in
 * flight and backing off included), a probe each (about 7 us on a 2-core machine: 100 blocked
 * keys cost an idle poll about 0.75 ms of its 1 ms), not with the number of events.
 * A claim that leaves part of `limit` unused (a tenant had fewer due events than its share) is
 * followed by another one soon enough; see start-relay.ts.
 *
 * FOR UPDATE SKIP LOCKED makes concurrent relays take disjoint batches without waiting for each
 * other; the row lock lasts only this statement, the lease does the rest.
 *
 * Crashes. Attempts are counted here, so an event that crashes relays still reaches max attempts
 * instead of looping forever. An event claimed with locked_by still set was cut short: its lease
 * ran out without an outcome (the relay crashed, was killed, or lost its database). Such an
 * event may be the poison that killed the relay, or an innocent that was in flight beside it.
 * After one crash it is claimed as usual (a relay killed by its orchestrator is no reason to slow
 * down); cut short again at its second attempt or later, it is claimed ALONE (one per claim, and
 * no other event in that claim; the relay runs it with nothing else in flight, see
 * start-relay.ts): a poison then takes only itself down, and the innocents that were beside it
 * twice are delivered one by one, fewest attempts first, each having lost two attempts. Without
 * this, every crash would burn an attempt of every event beside the poison, and after maxAttempts
 * crashes the innocents would be dead with it.
 * An event found with `attempts >= maxAttempts` used its last attempt without an outcome (a
 * failed last attempt is settled dead at once), so it is declared dead right here, with a
 * last_error that says so, instead of being delivered again.
 *
 * created_at comes back as epoch milliseconds, a number: a timestamp's text form follows the
 * session's DateStyle, and a pool given by the caller may have any (node-postgres parses only
 * ISO, and returns null otherwise).
 *
 * Bounded in bytes by the relay, which sizes `limit` by the bytes per event it has seen
 * (claim-plan.ts, byte-budget.ts); a cap here (a running sum of stored sizes) cost a third of the statement's
 * time and, stored sizes being compressed, bounded nothing a large repetitive payload brings.
 * The chosen rows reach the UPDATE as arrays (`picked`, unnest): the planner cannot know how many
 * rows the per-tenant LIMIT yields and guessed thousands, joining by a hash of the whole table (a
 * sequential scan, 20-50 ms per claim on a 50,000 backlog); an unnest is estimated small, so the
 * join is a nested loop over the arrays. Each row is found again by its ctid (`tid`: where the row
 * version that was locked, or read as a follower, lies), a TID scan that reads one heap tuple,
 * instead of a descent of the primary key (about a tenth of the claim's server work: 11,000 of
 * 124,000 instructions per event, counted under valgrind). A locked row cannot move before the
 * UPDATE reaches it (the lock is ours until the statement ends); a follower (not locked) that
 * another statement updated meanwhile is simply not claimed (its old version fails `ctid =` on
 * EvalPlanQual's recheck, or is no longer visible), which the run check below treats as a hole,
 * as before. tenant_id and id are checked as well, so a stale ctid can never match another row.
 * RETURNING gives each claimed row's new ctid (`tid`), which the settle uses the same way
 * (mark-delivered.ts).
 * Named: the relay's hottest statement, parsed and planned once per connection.
 */
/** What the claim knows of each candidate, keyed or not: the same columns from both sources. */
const CANDIDATE_COLUMNS = `e.tenant_id, e.id, e.ordering_key, e.attempts, e.next_attempt_at,
            e.locked_by IS NOT NULL AND e.attempts >= 2 AS cut_short, e.ctid AS tid`;

export const CLAIM_EVENTS_TEXT = `
WITH RECURSIVE tenants(tenant_id, earliest) AS (
  (SELECT e.tenant_id, e.next_attempt_at FROM once.outbox_events e
    WHERE e.status = 'pending' AND e.ordering_key IS NULL ORDER BY e.tenant_id, e.next_attempt_at LIMIT 1)
  UNION ALL
  SELECT n.tenant_id, n.next_attempt_at
    FROM tenants t
   CROSS JOIN LATERAL (
     SELECT e.tenant_id, e.next_attempt_at FROM once.outbox_events e
      WHERE e.status = 'pending' AND e.ordering_key IS NULL AND e.tenant_id > t.tenant_id
      ORDER BY e.tenant_id, e.next_attempt_at LIMIT 1) n
),
heads(tenant_id, ordering_key, id, next_attempt_at) AS (
  (SELECT e.tenant_id, e.ordering_key, e.id, e.next_attempt_at FROM once.outbox_events e
    WHERE e.status = 'pending' AND e.ordering_key IS NOT NULL ORDER BY e.tenant_id, e.ordering_key, e.id LIMIT 1)
  UNION ALL
  SELECT n.tenant_id, n.ordering_key, n.id, n.next_attempt_at
    FROM heads h
   CROSS JOIN LATERAL (
     SELECT e.tenant_id, e.ordering_key, e.id, e.next_attempt_at FROM once.outbox_events e
      WHERE e.status = 'pending' AND e.ordering_key IS NOT NULL AND (e.tenant_id, e.ordering_key) > (h.tenant_id, h.ordering_key)
      ORDER BY e.tenant_id, e.ordering_key, e.id LIMIT 1) n
),
due AS (
  SELECT u.tenant_id
    FROM (SELECT t.tenant_id FROM tenants t WHERE t.earliest <= now()
          UNION
          SELECT h.tenant_id FROM heads h WHERE h.next_attempt_at <= now()) u
   ORDER BY u.tenant_id COLLATE "C" <= $5::text COLLATE "C", u.tenant_id COLLATE "C"
   LIMIT $1
),
share AS (
  SELECT greatest(1, ceil($1::float8 / greatest(count(*), 1)))::int AS n FROM due
),
unkeyed AS (
  SELECT c.*
    FROM due d
   CROSS JOIN LATERAL (
     SELECT ${CANDIDATE_COLUMNS}
       FROM once.outbox_events e
      WHERE e.tenant_id = d.tenant_id AND e.status = 'pending' AND e.ordering_key IS NULL AND e.next_attempt_at <= now()
      ORDER BY e.next_attempt_at, e.id
      LIMIT (SELECT n FROM share)
      FOR UPDATE OF e SKIP LOCKED
   ) c
),
keyed AS (
  SELECT c.*
    FROM due d
   CROSS JOIN LATERAL (
     SELECT ${CANDIDATE_COLUMNS}
       FROM heads h
       JOIN once.outbox_events e ON e.tenant_id = h.tenant_id AND e.id = h.id
      WHERE h.tenant_id = d.tenant_id AND h.next_attempt_at <= now()
        AND e.status = 'pending' AND e.next_attempt_at <= now()
      ORDER BY e.next_attempt_at, e.id
      LIMIT (SELECT n FROM share)
      FOR UPDATE OF e SKIP LOCKED
   ) c
),
candidates AS (
  SELECT * FROM unkeyed UNION ALL SELECT * FROM keyed
),
run_heads AS (
  SELECT k.tenant_id, k.id, k.ordering_key FROM keyed k
   WHERE NOT k.cut_short AND k.attempts < $4::int
     AND NOT EXISTS (SELECT 1 FROM candidates s WHERE s.cut_short AND s.attempts < $4::int)
),
run_share AS (
  SELECT least($6::int, greatest(0, $1::int - (SELECT count(*) FROM candidates)) / greatest(count(*), 1))::int AS n FROM run_heads
),
followers AS (
  SELECT r.tenant_id, g.id, g.position, g.tid
    FROM run_heads r
   CROSS JOIN LATERAL (
     SELECT w.id, w.position, w.in_run, w.tid
       FROM (SELECT f.id, f.tid, row_number() OVER (ORDER BY f.id)::int AS position,
                    bool_and(f.next_attempt_at <= now() AND f.attempts < $4::int AND NOT (f.locked_by IS NOT NULL AND f.attempts >= 2))
                      OVER (ORDER BY f.id) AS in_run
               FROM (SELECT e.id, e.ctid AS tid, e.next_attempt_at, e.attempts, e.locked_by
                       FROM once.outbox_events e
                      WHERE e.tenant_id = r.tenant_id AND e.status = 'pending' AND e.ordering_key = r.ordering_key AND e.id > r.id
                      ORDER BY e.id
                      LIMIT (SELECT n FROM run_share)) f) w
      WHERE w.in_run
   ) g
),
chosen AS (
  SELECT c.tenant_id, c.id, c.cut_short, 0 AS position, c.tid FROM candidates c WHERE c.attempts >= $4::int
  UNION ALL
  (SELECT c.tenant_id, c.id, c.cut_short, 0, c.tid FROM candidates c WHERE c.cut_short AND c.attempts < $4::int
    ORDER BY c.attempts, c.next_attempt_at, c.id LIMIT 1)
  UNION ALL
  SELECT c.tenant_id, c.id, c.cut_short, 0, c.tid FROM candidates c
   WHERE NOT c.cut_short AND c.attempts < $4::int
     AND NOT EXISTS (SELECT 1 FROM candidates s WHERE s.cut_short AND s.attempts < $4::int)
  UNION ALL
  SELECT f.tenant_id, f.id, false, f.position, f.tid FROM followers f
),
picked AS (
  SELECT array_agg(tenant_id) AS tenants, array_agg(id) AS ids, array_agg(cut_short) AS cut, array_agg(position) AS positions, array_agg(tid) AS tids FROM chosen
)
UPDATE once.outbox_events e
   SET status = CASE WHEN e.attempts >= $4::int THEN 'dead' ELSE 'pending' END,
       next_attempt_at = CASE WHEN e.attempts >= $4::int THEN e.next_attempt_at ELSE now() + $2 * interval '1 millisecond' END,
       locked_by = CASE WHEN e.attempts >= $4::int THEN NULL ELSE $3 END,
       attempts = CASE WHEN e.attempts >= $4::int THEN e.attempts ELSE e.attempts + 1 END,
       last_error = CASE WHEN e.attempts >= $4::int
         THEN 'attempt ' || e.attempts || ' of ' || $4::int || ' ended without an outcome (the relay delivering it crashed, '
              || 'was killed or lost its database connection); no attempts left'
         ELSE e.last_error END
  FROM picked, unnest(picked.tenants, picked.ids, picked.cut, picked.positions, picked.tids) AS c(tenant_id, id, cut_short, position, tid)
 WHERE e.ctid = c.tid AND e.tenant_id = c.tenant_id AND e.id = c.id AND e.status = 'pending'
RETURNING e.tenant_id, e.id, e.dedupe_id, e.topic, e.ordering_key, CASE WHEN e.payload_text IS NULL THEN e.payload END AS payload, e.payload_text, e.headers, e.attempts, e.status, c.cut_short, c.position,
          extract(epoch FROM e.created_at)::float8 * 1000 AS created_ms, e.ctid AS tid`;

/** A json/jsonb value, and the length of the text it was parsed from (what it costs in memory). */
interface SizedJson {
  value: unknown;
  bytes: number;
}

const JSON_OID = 114;
const JSONB_OID = 3802;

/** Type parsers for this statement only: json and jsonb parsed as usual, and measured. */
const sizedJsonTypes = {
  getTypeParser: (oid: number, format?: string) => {
    if (oid === JSON_OID || oid === JSONB_OID) return (text: string): SizedJson => ({ value: JSON.parse(text), bytes: text.length });
    return (pgTypes.getTypeParser as (oid: number, format?: string) => unknown)(oid, format);
  },
};

export interface ClaimRequest {
  /** Events wanted (each due tenant gets a share; see above). */
  limit: number;
  leaseMs: number;
  relayId: string;
  maxAttempts: number;
  /**
   * The last tenant the previous claim served ('' at first); this claim starts with the due
   * tenants after it, in tenant_id order, and wraps around.
   */
  after: string;
  /** Followers one key's run may bring, at most (see `followers` above). */
  runFollowers: number;
}

export async function claimEvents(db: RelayDatabase, request: ClaimRequest): Promise<Claim> {
  const { limit, leaseMs, relayId, maxAttempts, after, runFollowers } = request;
  const sentAt = Date.now();
  const { rows } = await db.query<Row>({
    name: 'once_claim_events',
    text: CLAIM_EVENTS_TEXT,
    values: [limit, leaseMs, relayId, maxAttempts, after, runFollowers],
    types: sizedJsonTypes,
  } as pg.QueryConfig);
  // RETURNING follows no order; deliveries start in id order (and runs must be in it).
  rows.sort(byId);
  // Tenants after `after` come first (in code-unit order, as COLLATE "C" above), then the wrap-around.
  const rank = (tenant: string) => `${tenant > after ? 0 : 1}${tenant}`;
  let lastTenant: string | undefined;
  const claim: Claim = { lastTenant: after, events: [], followers: [], stray: [], exhausted: [] };
  // Where each key's run has got to, in id order: a follower counts only right after the one
  // before it. The UPDATE skips a row that stopped being pending under it (never expected: the
  // head's row lock keeps other relays off the key), and a run with a hole would deliver out of
  // order, so whatever comes after a hole is handed back instead.
  const runAt = new Map<string, number>();
  for (const row of rows) {
    if (lastTenant === undefined || rank(row.tenant_id) > rank(lastTenant)) lastTenant = row.tenant_id;
    const event = toEvent(row, sentAt + leaseMs);
    if (row.status === 'dead') claim.exhausted.push(event);
    else if (row.position === 0) {
      claim.events.push(event);
      if (row.ordering_key !== null) runAt.set(orderingKeyOf(event), 0);
    } else if (runAt.get(orderingKeyOf(event)) === row.position - 1) {
      claim.followers.push(event);
      runAt.set(orderingKeyOf(event), row.position);
    } else {
      claim.stray.push(event);
      runAt.delete(orderingKeyOf(event));
    }
  }
  claim.lastTenant = lastTenant ?? after;
  return claim;
}

/**
 * Id order of rows whose ids are bigint text (positive, no leading zeros): a shorter one is
 * smaller, and of equal length the text compares as the number does. No BigInt per row. (String:
 * a caller's pool may run under an application's global int8 parser, which gives numbers.)
 */
function byId(a: Row, b: Row): number {
  const x = String(a.id);
  const y = String(b.id);
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

/**
 * The payload as written: parsed from the text enqueue stored. JSON.stringify of that parse gives
 * the same text back (enqueue wrote it with JSON.stringify: keys in the same order, numbers and
 * escapes in the same form), so sinks send the payload's bytes as the application serialised them.
 */
function payloadOf(row: Row): SizedJson {
  if (row.payload_text !== null) return { value: JSON.parse(row.payload_text), bytes: row.payload_text.length };
  return row.payload ?? { value: null, bytes: 0 };
}

function toEvent(row: Row, leaseUntil: number): ClaimedEvent {
  const payload = payloadOf(row);
  const id = String(row.id);
  return {
    key: keyOf(row.tenant_id, id),
    id,
    dedupeId: row.dedupe_id,
    tenantId: row.tenant_id,
    topic: row.topic,
    orderingKey: row.ordering_key,
    payload: payload.value,
    headers: row.headers.value as Record<string, string>,
    createdAt: new Date(row.created_ms),
    attempt: row.attempts,
    cutShort: row.cut_short,
    leaseUntil,
    bytes: payload.bytes + row.headers.bytes,
    tid: row.tid,
  };
}
