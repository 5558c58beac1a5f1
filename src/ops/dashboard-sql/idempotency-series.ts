import type { Session } from '../../internal/session.ts';

/** Outcomes of calls per time bucket: the chart of the idempotency page. */
export interface OutcomeBucket {
  at: Date;
  executed: number;
  replayed: number;
  waited: number;
  /** Key reused with another request (422) or a model-supplied key refused. */
  rejected: number;
  rateLimited: number;
}

export interface OutcomeFilter {
  tenant?: string;
  tool?: string;
}

/**
 * Executions come from once.execution_series (sql/0010: the relay role reads no idempotency
 * record, the function reads their metadata); the other outcomes from once.dedupe_audit, through
 * its index on `at` for every tenant, or its primary key (tenant_id, id) for one tenant (node-pg
 * sends unnamed statements, planned with the actual values, so the `IS NULL OR` filters fold away).
 */
export async function idempotencySeries(session: Session, windowMs: number, bucketSeconds: number, filter: OutcomeFilter): Promise<OutcomeBucket[]> {
  const since = new Date(Date.now() - windowMs);
  const { rows: audited } = await session.query<{ at: Date; replayed: number; waited: number; rejected: number; rate_limited: number }>(
    `SELECT to_timestamp(floor(extract(epoch FROM at) / $2) * $2) AS at,
            count(*) FILTER (WHERE kind = 'replay')::int AS replayed,
            count(*) FILTER (WHERE kind = 'waited')::int AS waited,
            count(*) FILTER (WHERE kind IN ('key_reused', 'model_key_rejected', 'in_progress'))::int AS rejected,
            count(*) FILTER (WHERE kind = 'rate_limited')::int AS rate_limited
       FROM once.dedupe_audit
      WHERE at >= $1 AND ($3::text IS NULL OR tenant_id = $3) AND ($4::text IS NULL OR coalesce(tool, '') = $4)
      GROUP BY 1`,
    [since, bucketSeconds, filter.tenant ?? null, filter.tool ?? null],
  );
  const { rows: executed } = await session.query<{ bucket: Date; executions: number }>('SELECT bucket, executions FROM once.execution_series($1, $2, $3, $4)', [
    since,
    bucketSeconds,
    filter.tenant ?? null,
    filter.tool ?? null,
  ]);
  const buckets = new Map<number, OutcomeBucket>();
  const bucket = (at: Date) => {
    let found = buckets.get(at.getTime());
    if (!found) {
      found = { at, executed: 0, replayed: 0, waited: 0, rejected: 0, rateLimited: 0 };
      buckets.set(at.getTime(), found);
    }
    return found;
  };
  for (const row of executed) bucket(row.bucket).executed = row.executions;
  for (const row of audited)
    Object.assign(bucket(row.at), { replayed: row.replayed, waited: row.waited, rejected: row.rejected, rateLimited: row.rate_limited });
  return [...buckets.values()].sort((a, b) => a.at.getTime() - b.at.getTime());
}

export interface TenantToolOutcomes {
  tenantId: string;
  tool: string;
  executed: number;
  replayed: number;
  waited: number;
  rejected: number;
  rateLimited: number;
}

/**
 * Totals per tenant and tool over the window, busiest first, one page: as `pg-once status`
 * computes them (once.execution_counts and the audit rows of the window).
 */
export async function outcomesByTenantTool(session: Session, windowMs: number, filter: OutcomeFilter, limit: number): Promise<TenantToolOutcomes[]> {
  const { rows } = await session.query<{
    tenant_id: string;
    tool: string;
    executed: number;
    replayed: number;
    waited: number;
    rejected: number;
    rate_limited: number;
  }>(
    `WITH executed AS (
       SELECT tenant_id, tool, executions FROM once.execution_counts($1)
        WHERE ($2::text IS NULL OR tenant_id = $2) AND ($3::text IS NULL OR tool = $3)),
     audited AS (
       SELECT tenant_id, coalesce(tool, '') AS tool,
              count(*) FILTER (WHERE kind = 'replay')::int AS replayed,
              count(*) FILTER (WHERE kind = 'waited')::int AS waited,
              count(*) FILTER (WHERE kind IN ('key_reused', 'model_key_rejected', 'in_progress'))::int AS rejected,
              count(*) FILTER (WHERE kind = 'rate_limited')::int AS rate_limited
         FROM once.dedupe_audit
        WHERE at >= now() - $1 * interval '1 millisecond' AND ($2::text IS NULL OR tenant_id = $2) AND ($3::text IS NULL OR coalesce(tool, '') = $3)
        GROUP BY 1, 2)
     SELECT tenant_id, tool, coalesce(e.executions, 0) AS executed, coalesce(a.replayed, 0) AS replayed, coalesce(a.waited, 0) AS waited,
            coalesce(a.rejected, 0) AS rejected, coalesce(a.rate_limited, 0) AS rate_limited
       FROM executed e FULL JOIN audited a USING (tenant_id, tool)
      ORDER BY coalesce(e.executions, 0) + coalesce(a.replayed, 0) + coalesce(a.waited, 0) + coalesce(a.rejected, 0) + coalesce(a.rate_limited, 0) DESC,
               tenant_id, tool
      LIMIT $4`,
    [windowMs, filter.tenant ?? null, filter.tool ?? null, limit],
  );
  return rows.map((row) => ({
    tenantId: row.tenant_id,
    tool: row.tool,
    executed: row.executed,
    replayed: row.replayed,
    waited: row.waited,
    rejected: row.rejected,
    rateLimited: row.rate_limited,
  }));
}
