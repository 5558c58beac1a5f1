/**
 * Dead events: kept (no sweep deletes them) until an operator requeues them, here or on the
 * dashboard (a requeued event, once delivered, is swept like any other), or discards them on the
 * dashboard, which records who did it (src/ops/dashboard-sql/settle-dead-events.ts). Listed and
 * requeued through `pg-once outbox dead` and `pg-once outbox requeue`, as a login granted the
 * database's relay role (it sees every tenant's events) or one that bypasses row-level security.
 */
import { EventNotFoundError, InvalidOptionsError } from '../errors.ts';
import { assertOperatorRole } from './operator-role.ts';
import { type DatabaseTarget, withSession } from '../internal/session.ts';
import { WAKE_CHANNEL } from '../outbox/relay-wakeup.ts';

export interface DeadEvent {
  tenantId: string;
  id: string;
  dedupeId: string;
  topic: string;
  orderingKey: string | null;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
}

/** Dead events, oldest first. */
export async function listDeadEvents(target: DatabaseTarget, options: { limit?: number } = {}): Promise<DeadEvent[]> {
  const limit = options.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
    throw new InvalidOptionsError('listDeadEvents options', [{ path: ['limit'], message: 'expected an integer from 1 to 10 000', code: 'too_big' }]);
  }
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'outbox dead');
    const { rows } = await session.query<{
      tenant_id: string;
      id: string;
      dedupe_id: string;
      topic: string;
      ordering_key: string | null;
      attempts: number;
      last_error: string | null;
      created_at: Date;
    }>(
      `SELECT tenant_id, id, dedupe_id, topic, ordering_key, attempts, last_error, created_at
         FROM once.outbox_events WHERE status = 'dead' ORDER BY id LIMIT $1`,
      [limit],
    );
    return rows.map((row) => ({
      tenantId: row.tenant_id,
      id: String(row.id),
      dedupeId: row.dedupe_id,
      topic: row.topic,
      orderingKey: row.ordering_key,
      attempts: row.attempts,
      lastError: row.last_error,
      createdAt: row.created_at,
    }));
  });
}

/**
 * Puts dead events back to pending with a fresh attempt budget, due at once, and wakes the relays.
 * `ids`: outbox event ids, or 'all'. Returns how many were requeued. An id that is not a dead
 * event throws EventNotFoundError and requeues nothing.
 */
export async function requeueDeadEvents(target: DatabaseTarget, ids: readonly string[] | 'all'): Promise<number> {
  if (ids !== 'all' && (ids.length === 0 || ids.some((id) => !/^\d{1,19}$/.test(id)))) {
    throw new InvalidOptionsError('requeue', [{ path: ['ids'], message: 'expected outbox event ids (positive integers) or "all"', code: 'invalid_format' }]);
  }
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'outbox requeue');
    await session.query('BEGIN');
    try {
      const { rows } = await session.query<{ id: string }>(
        `UPDATE once.outbox_events
            SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_by = NULL
          WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
          RETURNING id`,
        [ids === 'all' ? null : ids],
      );
      if (ids !== 'all') {
        const found = new Set(rows.map((row) => String(row.id)));
        const missing = ids.filter((id) => !found.has(id));
        if (missing.length > 0) throw new EventNotFoundError(`pg-once: no dead outbox event with id ${missing.join(', ')}`);
      }
      await session.query(`NOTIFY ${WAKE_CHANNEL}`);
      await session.query('COMMIT');
      return rows.length;
    } catch (error) {
      await session.query('ROLLBACK').catch(() => {});
      throw error;
    }
  });
}
