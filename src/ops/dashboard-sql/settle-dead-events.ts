import type { Session } from '../../internal/session.ts';
import { WAKE_CHANNEL } from '../../outbox/relay-wakeup.ts';

export type OperatorActionKind = 'requeue' | 'discard';

/** The events an action touched: those of the ids asked for that were still dead. */
export interface SettledEvents {
  ids: string[];
}

// The change and its audit rows in ONE statement (a CTE over the change's RETURNING): an action
// cannot commit without the rows saying who did it. Both read the dead events' partial index.
const REQUEUE = `
  WITH before AS (
    SELECT tenant_id, id, topic, dedupe_id, attempts, last_error FROM once.outbox_events
     WHERE status = 'dead' AND id = ANY($1::bigint[]) FOR UPDATE),
  changed AS (
    -- As \`pg-once outbox requeue\`: a fresh attempt budget, due at once.
    UPDATE once.outbox_events e SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_by = NULL
      FROM before b WHERE e.tenant_id = b.tenant_id AND e.id = b.id AND e.status = 'dead'
    RETURNING b.*)
  INSERT INTO once.operator_actions (actor, action, tenant_id, event_id, detail)
  SELECT $2, 'requeue', tenant_id, id,
         jsonb_build_object('topic', topic, 'dedupe_id', dedupe_id, 'attempts', attempts, 'last_error', left(last_error, 1000)) || $3::jsonb
    FROM changed RETURNING event_id`;

const DISCARD = `
  WITH changed AS (
    DELETE FROM once.outbox_events WHERE status = 'dead' AND id = ANY($1::bigint[])
    RETURNING tenant_id, id, topic, dedupe_id, attempts, last_error)
  INSERT INTO once.operator_actions (actor, action, tenant_id, event_id, detail)
  SELECT $2, 'discard', tenant_id, id,
         jsonb_build_object('topic', topic, 'dedupe_id', dedupe_id, 'attempts', attempts, 'last_error', left(last_error, 1000)) || $3::jsonb
    FROM changed RETURNING event_id`;

/**
 * Requeues (back to pending, and the relays woken) or discards (deleted) dead events, recording
 * one once.operator_actions row per event. Ids that are no longer dead (requeued meanwhile by
 * someone else) are skipped, not an error: the page says how many were settled.
 */
export async function settleDeadEvents(
  session: Session,
  action: OperatorActionKind,
  ids: readonly string[],
  actor: string,
  detail: Record<string, unknown>,
): Promise<SettledEvents> {
  await session.query('BEGIN');
  try {
    const { rows } = await session.query<{ event_id: string }>(action === 'requeue' ? REQUEUE : DISCARD, [ids, actor, JSON.stringify(detail)]);
    if (action === 'requeue' && rows.length > 0) await session.query(`NOTIFY ${WAKE_CHANNEL}`);
    await session.query('COMMIT');
    return { ids: rows.map((row) => String(row.event_id)) };
  } catch (error) {
    await session.query('ROLLBACK').catch(() => {});
    throw error;
  }
}
