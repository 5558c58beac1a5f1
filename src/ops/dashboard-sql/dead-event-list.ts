import type { Session } from '../../internal/session.ts';

export interface DeadEventFilter {
  tenant?: string;
  topic?: string;
  /** Text the last error contains (case-insensitive). */
  error?: string;
}

export interface DeadEventRow {
  tenantId: string;
  id: string;
  topic: string;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
}

/**
 * Dead events, newest first, a page at a time (keyset on id: `before` is the last id of the
 * previous page). Without a tenant, the partial index on dead events' ids (sql/0001) is read
 * backwards; with one, the primary key (tenant_id, id). Topic and error filter those rows:
 * dead events are few next to the table, and neither column is worth an index every enqueue pays.
 * The error is shown cut to 300 characters; the detail page has all of it.
 */
export async function deadEventList(session: Session, filter: DeadEventFilter, page: { before?: string; limit: number }): Promise<DeadEventRow[]> {
  const { rows } = await session.query<DeadEventColumns>(
    `SELECT tenant_id, id, topic, attempts, left(last_error, 300) AS last_error, created_at
       FROM once.outbox_events
      WHERE status = 'dead'
        AND ($1::text IS NULL OR tenant_id = $1)
        AND ($2::text IS NULL OR topic = $2)
        AND ($3::text IS NULL OR strpos(lower(last_error), lower($3)) > 0)
        AND ($4::bigint IS NULL OR id < $4)
      ORDER BY id DESC LIMIT $5`,
    [filter.tenant ?? null, filter.topic ?? null, filter.error ?? null, page.before ?? null, page.limit],
  );
  return rows.map(deadEventRow);
}

/** The dead events among these ids (the partial index on dead events' ids), for a confirmation page. */
export async function deadEventsByIds(session: Session, ids: readonly string[]): Promise<DeadEventRow[]> {
  const { rows } = await session.query<DeadEventColumns>(
    `SELECT tenant_id, id, topic, attempts, left(last_error, 300) AS last_error, created_at
       FROM once.outbox_events WHERE status = 'dead' AND id = ANY($1::bigint[]) ORDER BY id DESC`,
    [ids],
  );
  return rows.map(deadEventRow);
}

interface DeadEventColumns {
  tenant_id: string;
  id: string;
  topic: string;
  attempts: number;
  last_error: string | null;
  created_at: Date;
}

function deadEventRow(row: DeadEventColumns): DeadEventRow {
  return { tenantId: row.tenant_id, id: String(row.id), topic: row.topic, attempts: row.attempts, lastError: row.last_error, createdAt: row.created_at };
}
