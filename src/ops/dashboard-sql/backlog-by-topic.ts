import type { Session } from '../../internal/session.ts';

export interface TopicBacklog {
  topic: string;
  pending: number;
  tenants: number;
  oldestAgeMs: number;
}

/**
 * Pending events per topic, largest first. No index leads with topic (every index is paid by
 * every enqueue), so this reads the pending rows, found through the relay's partial indexes;
 * delivered and dead events, the bulk of the table, are never read. A backlog of a million
 * pending events is a few hundred milliseconds here, and a page the operator asked for.
 */
export async function backlogByTopic(session: Session, limit: number): Promise<TopicBacklog[]> {
  const { rows } = await session.query<{ topic: string; pending: number; tenants: number; oldest_ms: number }>(
    `WITH pending AS (
       SELECT topic, tenant_id, created_at FROM once.outbox_events WHERE status = 'pending' AND ordering_key IS NULL
       UNION ALL
       SELECT topic, tenant_id, created_at FROM once.outbox_events WHERE status = 'pending' AND ordering_key IS NOT NULL)
     SELECT topic, count(*)::int AS pending, count(DISTINCT tenant_id)::int AS tenants,
            (extract(epoch FROM now() - min(created_at)) * 1000)::float8 AS oldest_ms
       FROM pending GROUP BY topic ORDER BY 2 DESC, topic LIMIT $1`,
    [limit],
  );
  return rows.map((row) => ({ topic: row.topic, pending: row.pending, tenants: row.tenants, oldestAgeMs: Math.max(0, Math.round(row.oldest_ms)) }));
}
