import type { Session } from '../../internal/session.ts';

export interface EventDetail {
  tenantId: string;
  id: string;
  dedupeId: string;
  topic: string;
  orderingKey: string | null;
  status: string;
  attempts: number;
  lastError: string | null;
  /** The payload's JSON text as enqueue wrote it (or the jsonb's, for rows older than sql/0009). */
  payload: string;
  headers: string;
  nextAttemptAt: Date;
  lockedBy: string | null;
  createdAt: Date;
  deliveredAt: Date | null;
}

export interface OperatorAction {
  at: Date;
  actor: string;
  dbRole: string;
  action: string;
  tenantId: string;
  eventId: string;
  detail: Record<string, unknown>;
}

/** One event by its primary key. The payload is cut at 256 KiB: a page, not an export. */
export async function eventDetail(session: Session, tenantId: string, id: string): Promise<EventDetail | undefined> {
  const { rows } = await session.query<{
    tenant_id: string;
    id: string;
    dedupe_id: string;
    topic: string;
    ordering_key: string | null;
    status: string;
    attempts: number;
    last_error: string | null;
    payload: string;
    headers: string;
    next_attempt_at: Date;
    locked_by: string | null;
    created_at: Date;
    delivered_at: Date | null;
  }>(
    `SELECT tenant_id, id, dedupe_id, topic, ordering_key, status, attempts, last_error,
            left(coalesce(payload_text, payload::text), 262144) AS payload, jsonb_pretty(headers) AS headers,
            next_attempt_at, locked_by, created_at, delivered_at
       FROM once.outbox_events WHERE tenant_id = $1 AND id = $2`,
    [tenantId, id],
  );
  const row = rows[0];
  if (!row) return undefined;
  return {
    tenantId: row.tenant_id,
    id: String(row.id),
    dedupeId: row.dedupe_id,
    topic: row.topic,
    orderingKey: row.ordering_key,
    status: row.status,
    attempts: row.attempts,
    lastError: row.last_error,
    payload: row.payload,
    headers: row.headers,
    nextAttemptAt: row.next_attempt_at,
    lockedBy: row.locked_by,
    createdAt: row.created_at,
    deliveredAt: row.delivered_at,
  };
}

/** What operators did to one event (sql/0010's index on tenant_id, event_id), or the newest actions of all. */
export async function operatorActions(session: Session, event: { tenantId: string; id: string } | undefined, limit: number): Promise<OperatorAction[]> {
  const { rows } = await session.query<{
    at: Date;
    actor: string;
    db_role: string;
    action: string;
    tenant_id: string;
    event_id: string;
    detail: Record<string, unknown>;
  }>(
    event
      ? `SELECT at, actor, db_role, action, tenant_id, event_id, detail FROM once.operator_actions
          WHERE tenant_id = $1 AND event_id = $2 ORDER BY id DESC LIMIT $3`
      : `SELECT at, actor, db_role, action, tenant_id, event_id, detail FROM once.operator_actions ORDER BY id DESC LIMIT $1`,
    event ? [event.tenantId, event.id, limit] : [limit],
  );
  return rows.map((row) => ({
    at: row.at,
    actor: row.actor,
    dbRole: row.db_role,
    action: row.action,
    tenantId: row.tenant_id,
    eventId: String(row.event_id),
    detail: row.detail,
  }));
}
