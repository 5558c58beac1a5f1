import type pg from 'pg';
import { type EventRef, refArrays } from './event-refs.ts';

export interface Failure extends EventRef {
  /** Dead now (a permanent rejection, or the last attempt); else retried after `delayMs`. */
  dead: boolean;
  delayMs: number;
  error: string;
}

/** Settles failed attempts in one statement (batched like mark-delivered.ts). */
const TEXT = `
UPDATE once.outbox_events e
   SET status = CASE WHEN f.dead THEN 'dead' ELSE 'pending' END,
       next_attempt_at = now() + f.delay_ms * interval '1 millisecond',
       last_error = f.error, locked_by = NULL
  FROM unnest($1::text[], $2::bigint[], $3::boolean[], $4::double precision[], $5::text[])
       AS f(tenant_id, id, dead, delay_ms, error)
 WHERE e.tenant_id = f.tenant_id AND e.id = f.id AND e.status = 'pending'`;

export async function markFailed(pool: pg.Pool, failures: readonly Failure[]): Promise<void> {
  if (failures.length === 0) return;
  await pool.query({
    name: 'once_mark_failed',
    text: TEXT,
    values: [...refArrays(failures), failures.map((f) => f.dead), failures.map((f) => f.delayMs), failures.map((f) => f.error.slice(0, 2_000))],
  });
}
