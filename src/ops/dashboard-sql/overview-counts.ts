import type { Session } from '../../internal/session.ts';

export interface OverviewCounts {
  pending: number;
  /** Age of the pending event with the smallest id, in milliseconds; null when none is pending. */
  oldestPendingAgeMs: number | null;
  dead: number;
}

/**
 * Each count reads one partial index and nothing else (index-only scans): the pending events are
 * split by `ordering_key IS NULL` because that is how the relay's two partial indexes are split
 * (sql/0006); `status = 'pending'` alone implies neither predicate, and would read the table.
 * The oldest pending event is the one with the smallest id (ids are handed out at insert, in
 * commit order but for concurrent writers), found in those same indexes, then its created_at
 * read through the primary key: min(created_at) would read every pending row.
 */
export async function overviewCounts(session: Session): Promise<OverviewCounts> {
  const { rows } = await session.query<{ pending: number; dead: number; oldest_ms: number | null }>(
    `WITH pending AS (
       SELECT tenant_id, id FROM once.outbox_events WHERE status = 'pending' AND ordering_key IS NULL
       UNION ALL
       SELECT tenant_id, id FROM once.outbox_events WHERE status = 'pending' AND ordering_key IS NOT NULL),
     oldest AS (SELECT tenant_id, id FROM pending ORDER BY id LIMIT 1)
     SELECT (SELECT count(*) FROM pending)::int AS pending,
            (SELECT count(*) FROM once.outbox_events WHERE status = 'dead')::int AS dead,
            (SELECT extract(epoch FROM now() - e.created_at) * 1000 FROM oldest o
               JOIN once.outbox_events e ON e.tenant_id = o.tenant_id AND e.id = o.id)::float8 AS oldest_ms`,
  );
  const row = rows[0]!;
  return { pending: row.pending, dead: row.dead, oldestPendingAgeMs: row.oldest_ms === null ? null : Math.max(0, Math.round(row.oldest_ms)) };
}
