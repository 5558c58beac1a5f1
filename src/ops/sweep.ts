/**
 * sweep(): TTL pruning, so the tables stay the size of their live data. Deletes
 * - idempotency records past expires_at (never an in-progress one whose lease is live, never one
 *   a running transaction holds: SKIP LOCKED);
 * - delivered outbox events older than `outboxRetention` (dead events are never swept: they stay
 *   until an operator requeues them, and are then swept once delivered, or discards them on the
 *   dashboard);
 * - audit rows older than `auditRetention`.
 * In bounded batches, each its own short statement, so sweeping millions of rows never holds
 * locks that stall claims. A swept key executes again on its next call, exactly like expiry.
 * Run as a login granted the database's relay role (the relay schedules it) or a superuser.
 */
import { z } from 'zod';
import { type DatabaseTarget, type Session, withSession } from '../internal/session.ts';
import { assertOperatorRole } from './operator-role.ts';
import { durationSchema, parseOptions } from '../options.ts';

/** Rows a sweep deletes per statement (the relay's sweep option checks it too). */
export const sweepBatchSizeSchema = z.number().int().min(1).max(100_000);

/** A retention as users write it, with its default, in milliseconds. */
const retention = (fallback: string) => z.union([z.number(), z.string()]).default(fallback).pipe(durationSchema());

export const sweepOptionsSchema = z
  .object({
    /** Rows deleted per statement. (Default: 5 000) */
    batchSize: sweepBatchSizeSchema.default(5_000),
    /** Keep delivered outbox events this long after delivery. (Default: '7d') */
    outboxRetention: retention('7d'),
    /** Keep audit rows this long. (Default: '30d') */
    auditRetention: retention('30d'),
    /** Stop after this many statements in all, leaving the rest to the next sweep. (Default: 10 000) */
    maxBatches: z.number().int().min(1).default(10_000),
  })
  .strict();
/** Options of {@link sweep}. */
export interface SweepOptions {
  /** Rows deleted per statement (1 to 100 000). (Default: 5 000) */
  batchSize?: number;
  /** Keep delivered outbox events this long after delivery: milliseconds or text such as '3d'. (Default: '7d') */
  outboxRetention?: number | string;
  /** Keep audit rows this long: milliseconds or text such as '30d'. (Default: '30d') */
  auditRetention?: number | string;
  /** Stop after this many statements in all, leaving the rest to the next sweep. (Default: 10 000) */
  maxBatches?: number;
}

export interface SweepResult {
  idempotencyKeys: number;
  outboxEvents: number;
  dedupeAudit: number;
  /** Statements run. */
  batches: number;
  /** Whether maxBatches stopped the sweep before everything due was deleted. */
  truncated: boolean;
  milliseconds: number;
}

/**
 * One statement per table, each returning how many rows it deleted. The first CTE picks a batch
 * with FOR UPDATE SKIP LOCKED (rows a transaction is working on are left for next time, and the
 * sweep never waits on a claim); the DELETE joins on the primary key, oldest rows first, using the
 * retention indexes of sql/0001. Expired idempotency records: see sql/0004_operations.sql.
 */
const STATEMENTS = {
  // Through a SECURITY DEFINER function: the relay role cannot read idempotency records itself.
  idempotencyKeys: `SELECT once.sweep_idempotency_keys($1) AS n`,
  outboxEvents: `
    WITH batch AS (
      SELECT tenant_id, id FROM once.outbox_events
       WHERE status = 'delivered' AND delivered_at < now() - $2 * interval '1 millisecond'
       ORDER BY delivered_at LIMIT $1 FOR UPDATE SKIP LOCKED),
    deleted AS (
      DELETE FROM once.outbox_events e USING batch b WHERE e.tenant_id = b.tenant_id AND e.id = b.id RETURNING 1)
    SELECT count(*)::int AS n FROM deleted`,
  // Audit rows are append-only: nobody locks them, so no SKIP LOCKED (and no UPDATE privilege).
  dedupeAudit: `
    WITH batch AS (
      SELECT tenant_id, id FROM once.dedupe_audit
       WHERE at < now() - $2 * interval '1 millisecond'
       ORDER BY at LIMIT $1),
    deleted AS (
      DELETE FROM once.dedupe_audit a USING batch b WHERE a.tenant_id = b.tenant_id AND a.id = b.id RETURNING 1)
    SELECT count(*)::int AS n FROM deleted`,
} as const;

export async function sweep(target: DatabaseTarget, options?: SweepOptions): Promise<SweepResult> {
  const opts = parseOptions(sweepOptionsSchema, options, 'sweep options');
  const started = performance.now();
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'sweep');
    const result: SweepResult = { idempotencyKeys: 0, outboxEvents: 0, dedupeAudit: 0, batches: 0, truncated: false, milliseconds: 0 };
    const retentions = { idempotencyKeys: 0, outboxEvents: opts.outboxRetention, dedupeAudit: opts.auditRetention };
    for (const table of ['idempotencyKeys', 'outboxEvents', 'dedupeAudit'] as const) {
      result[table] = await sweepTable(session, table, opts.batchSize, retentions[table], () => {
        result.batches += 1;
        return result.batches < opts.maxBatches;
      });
      if (result.batches >= opts.maxBatches) {
        result.truncated = true;
        break;
      }
    }
    const deleted = { idempotencyKeys: result.idempotencyKeys, outboxEvents: result.outboxEvents, dedupeAudit: result.dedupeAudit };
    await session.query(RECORD_SWEEP, [JSON.stringify(deleted), result.truncated]);
    result.milliseconds = Math.round(performance.now() - started);
    return result;
  });
}

/**
 * Each sweep leaves a row in once.sweeps (sql/0008), whoever ran it, so operators can tell when
 * the last one ran; old rows of its own and relays not seen for a week go in the same statement.
 */
const RECORD_SWEEP = `
WITH old_sweeps AS (DELETE FROM once.sweeps WHERE at < now() - interval '30 days'),
     gone_relays AS (DELETE FROM once.relays WHERE seen_at < now() - interval '7 days')
INSERT INTO once.sweeps (deleted, truncated) VALUES ($1::jsonb, $2)`;

async function sweepTable(
  session: Session,
  table: keyof typeof STATEMENTS,
  batchSize: number,
  retentionMs: number,
  mayContinue: () => boolean,
): Promise<number> {
  const text = STATEMENTS[table];
  const values = table === 'idempotencyKeys' ? [batchSize] : [batchSize, retentionMs];
  let deleted = 0;
  for (;;) {
    const { rows } = await session.query<{ n: number }>(text, values);
    const count = rows[0]?.n ?? 0;
    deleted += count;
    const allowed = mayContinue();
    if (count < batchSize || !allowed) return deleted;
  }
}
