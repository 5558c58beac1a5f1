import type { Session } from '../../internal/session.ts';

export interface TenantBacklog {
  tenantId: string;
  pending: number;
  /** Age of the tenant's pending event with the smallest id, in milliseconds. */
  oldestAgeMs: number;
}

/** Where the next page starts: after this tenant (by name), or after this (count, tenant) (by size). */
export interface BacklogCursor {
  tenantId: string;
  pending: number;
}

// Pending events, from the relay's two partial indexes, both led by tenant_id (index-only scans;
// see overview-counts.ts for why two). $1: the tenant a by-name page starts after.
const pending = (afterTenant: boolean) => `
  SELECT tenant_id, id FROM once.outbox_events
   WHERE status = 'pending' AND ordering_key IS NULL${afterTenant ? ' AND tenant_id > $1' : ''}
  UNION ALL
  SELECT tenant_id, id FROM once.outbox_events
   WHERE status = 'pending' AND ordering_key IS NOT NULL${afterTenant ? ' AND tenant_id > $1' : ''}`;

// The page's rows, then each one's oldest event through the primary key.
const withOldest = (page: string, order: string) => `
  WITH page AS (${page})
  SELECT p.tenant_id, p.pending, (extract(epoch FROM now() - e.created_at) * 1000)::float8 AS oldest_ms
    FROM page p JOIN once.outbox_events e ON e.tenant_id = p.tenant_id AND e.id = p.oldest_id
   ORDER BY ${order}`;

/** By name: keyset on tenant_id; the scan stops once the page's tenants are read. */
const BY_NAME = withOldest(
  `SELECT tenant_id, count(*)::int AS pending, min(id) AS oldest_id FROM (${pending(true)}) p
    GROUP BY tenant_id ORDER BY tenant_id LIMIT $2`,
  'p.tenant_id',
);

/** By size: an aggregate has no index order, so every pending index entry is counted per page. */
const BY_SIZE = withOldest(
  `SELECT tenant_id, count(*)::int AS pending, min(id) AS oldest_id FROM (${pending(false)}) p
    GROUP BY tenant_id
   HAVING $1::text IS NULL OR count(*) < $3 OR (count(*) = $3 AND tenant_id > $1)
    ORDER BY count(*) DESC, tenant_id LIMIT $2`,
  'p.pending DESC, p.tenant_id',
);

/**
 * Pending events per tenant, a page at a time. By name, 10,000 tenants cost what one page of them
 * holds; by size (the default view: who is backed up), one pass over the pending index entries.
 */
export async function backlogByTenant(session: Session, options: { order: 'size' | 'name'; after?: BacklogCursor; limit: number }): Promise<TenantBacklog[]> {
  const { rows } =
    options.order === 'name'
      ? await session.query<{ tenant_id: string; pending: number; oldest_ms: number }>(BY_NAME, [options.after?.tenantId ?? '', options.limit])
      : await session.query<{ tenant_id: string; pending: number; oldest_ms: number }>(BY_SIZE, [
          options.after?.tenantId ?? null,
          options.limit,
          options.after?.pending ?? 0,
        ]);
  return rows.map((row) => ({ tenantId: row.tenant_id, pending: row.pending, oldestAgeMs: Math.max(0, Math.round(row.oldest_ms)) }));
}
