import type { Session } from '../../internal/session.ts';

export interface DeliveryBucket {
  at: Date;
  delivered: number;
  /** Median and 95th percentile of commit-to-delivery time, in milliseconds. */
  p50Ms: number;
  p95Ms: number;
}

/**
 * Deliveries per bucket over the window, and how long events waited between their transaction
 * and their delivery. Reads the partial index on delivered_at (sql/0001, the sweep's) for the
 * window only, then those rows: never the pending backlog. created_at is the enqueuing
 * transaction's start (now()), which a long transaction makes look slower: for a chart of the
 * relay's latency that is the side to err on.
 */
export async function deliverySeries(session: Session, windowMs: number, bucketSeconds: number): Promise<DeliveryBucket[]> {
  const { rows } = await session.query<{ at: Date; delivered: number; p50: number; p95: number }>(
    `SELECT to_timestamp(floor(extract(epoch FROM delivered_at) / $2) * $2) AS at, count(*)::int AS delivered,
            (extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY delivered_at - created_at)) * 1000)::float8 AS p50,
            (extract(epoch FROM percentile_cont(0.95) WITHIN GROUP (ORDER BY delivered_at - created_at)) * 1000)::float8 AS p95
       FROM once.outbox_events
      WHERE status = 'delivered' AND delivered_at >= now() - $1 * interval '1 millisecond'
      GROUP BY 1 ORDER BY 1`,
    [windowMs, bucketSeconds],
  );
  return rows.map((row) => ({ at: row.at, delivered: row.delivered, p50Ms: Math.max(0, row.p50), p95Ms: Math.max(0, row.p95) }));
}
