/**
 * status(): what an operator wants to see without writing SQL. Per tenant and tool over a window
 * (default 1 hour): calls, executions, replays, waits, key reuses, rate-limited calls; the outbox:
 * pending, oldest pending age, dead, delivery rate; table sizes; the last and next sweep; the
 * database's logical replication slots (the relays' doorbells) and the WAL each holds back.
 * Run as a login granted the database's relay role (it sees metadata of every tenant, no results) or a superuser.
 */
import { z } from 'zod';
import { quoteIdentifier } from '../internal/bind-variables.ts';
import { assertOperatorRole } from './operator-role.ts';
import { type DatabaseTarget, withSession } from '../internal/session.ts';
import { durationSchema, parseOptions } from '../options.ts';
import { DEFAULT_SWEEP_SCHEDULE, lastSweep, nextSweepAt } from './sweep-schedule.ts';

const HOUR_MILLISECONDS = 60 * 60 * 1_000;

export const statusOptionsSchema = z
  .object({
    /** The window the counts cover: milliseconds or e.g. '1h', '15m'. (Default: '1h') */
    window: durationSchema({ positive: true }).default(HOUR_MILLISECONDS),
    /** The relays' sweep schedule, to tell when the next sweep is due. (Default: '*\/5 * * * *') */
    sweepSchedule: z.string().default(DEFAULT_SWEEP_SCHEDULE),
  })
  .strict();
/** Options of {@link status}. */
export interface StatusOptions {
  /** The window the counts cover: milliseconds or text such as '1h', '15m'. (Default: '1h') */
  window?: number | string;
  /** The relays' sweep schedule, to tell when the next sweep is due. (Default: '*\/5 * * * *') */
  sweepSchedule?: string;
}

/**
 * Tables whose heap is at most this size are counted exactly; larger ones show the planner's
 * estimate. pg_class.reltuples is 0 (or -1) until the first ANALYZE, so a table of 150 rows read
 * "0": the size, unlike the estimate, is never stale, and counting 16 MiB takes milliseconds.
 */
const EXACT_COUNT_MAX_BYTES = 16 * 1_024 * 1_024;

export interface TenantToolStatus {
  tenantId: string;
  /** '' when the calls named no tool. */
  tool: string;
  /** Every call that reached the claim: executed, replayed, waited, rejected or limited. */
  calls: number;
  /** Calls that ran fn (fresh keys and expired ones taken over). */
  executions: number;
  /** Calls answered from a stored result without waiting. */
  replays: number;
  /** Calls that waited for a concurrent duplicate (then replayed or executed). */
  waits: number;
  keyReuses: number;
  rateLimited: number;
  /**
   * Calls refused with IDEMPOTENCY_IN_PROGRESS (HTTP 409): the key's first call was still running
   * and the duplicate could not wait for it (waitMs ran out, or no wait slot was free). Counted for
   * calls whose transaction withTenant opened (sql/0011).
   */
  inProgress: number;
}

export interface Status {
  generatedAt: Date;
  windowMs: number;
  tenants: TenantToolStatus[];
  outbox: { pending: number; oldestPendingAgeMs: number | null; dead: number; deliveredInWindow: number; deliveriesPerSecond: number };
  /**
   * `rows` is exact when `rowsExact` (small tables this login may read), else the planner's
   * estimate (`estimatedRows`).
   */
  tables: { table: string; bytes: number; estimatedRows: number; rows: number; rowsExact: boolean }[];
  sweep: { schedule: string; lastRunAt: Date | null; nextRunAt: Date | null };
  /**
   * Logical replication slots of this database: the relays' doorbells (`once_doorbell_*`,
   * temporary, gone with their relay) and any other, since every slot holds WAL back until it is
   * acknowledged. `retainedWalBytes`: WAL from the slot's restart_lsn to the server's end of WAL.
   */
  replicationSlots: { slot: string; plugin: string; temporary: boolean; active: boolean; retainedWalBytes: number | null }[];
}

export async function status(target: DatabaseTarget, options?: StatusOptions): Promise<Status> {
  const opts = parseOptions(statusOptionsSchema, options, 'status options');
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'status');
    const window = [opts.window];
    const { rows: calls } = await session.query<{
      tenant_id: string;
      tool: string;
      executions: number;
      replays: number;
      waits: number;
      waited_replays: number;
      key_reuses: number;
      rate_limited: number;
      in_progress: number;
    }>(
      `WITH executed AS (
         -- A SECURITY DEFINER function: the relay role cannot read idempotency records itself.
         SELECT tenant_id, tool, executions AS n FROM once.execution_counts($1)),
       audited AS (
         SELECT tenant_id, coalesce(tool, '') AS tool,
                count(*) FILTER (WHERE kind = 'replay')::int AS replays,
                count(*) FILTER (WHERE kind = 'waited')::int AS waits,
                count(*) FILTER (WHERE kind = 'waited' AND detail->>'outcome' = 'replayed')::int AS waited_replays,
                count(*) FILTER (WHERE kind = 'key_reused')::int AS key_reuses,
                count(*) FILTER (WHERE kind = 'rate_limited')::int AS rate_limited,
                count(*) FILTER (WHERE kind = 'in_progress')::int AS in_progress
           FROM once.dedupe_audit WHERE at >= now() - $1 * interval '1 millisecond' GROUP BY 1, 2)
       SELECT tenant_id, tool, coalesce(e.n, 0) AS executions, coalesce(a.replays, 0) AS replays,
              coalesce(a.waits, 0) AS waits, coalesce(a.waited_replays, 0) AS waited_replays,
              coalesce(a.key_reuses, 0) AS key_reuses, coalesce(a.rate_limited, 0) AS rate_limited,
              coalesce(a.in_progress, 0) AS in_progress
         FROM executed e FULL JOIN audited a USING (tenant_id, tool)
        ORDER BY tenant_id, tool`,
      window,
    );
    const { rows: outbox } = await session.query<{ pending: number; oldest_ms: number | null; dead: number; delivered: number }>(
      `SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
              (extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')) * 1000)::float8 AS oldest_ms,
              count(*) FILTER (WHERE status = 'dead')::int AS dead,
              count(*) FILTER (WHERE status = 'delivered' AND delivered_at >= now() - $1 * interval '1 millisecond')::int AS delivered
         FROM once.outbox_events`,
      window,
    );
    const { rows: tables } = await session.query<{ table: string; bytes: string; estimated_rows: string; countable: boolean }>(
      `SELECT c.relname AS table, pg_total_relation_size(c.oid) AS bytes, greatest(c.reltuples, 0)::bigint AS estimated_rows,
              pg_relation_size(c.oid) <= $1 AND has_table_privilege(c.oid, 'SELECT') AS countable
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'once' AND c.relkind = 'r' ORDER BY 1`,
      [EXACT_COUNT_MAX_BYTES],
    );
    const exact = new Map<string, number>();
    for (const table of tables.filter((row) => row.countable)) {
      // Row-level security leaves the relay role every row of the tenant tables it may read.
      const { rows } = await session.query<{ n: number }>(`SELECT count(*)::int AS n FROM once.${quoteIdentifier(table.table)}`);
      exact.set(table.table, rows[0]!.n);
    }
    // pg_replication_slots and the WAL position functions need no privilege. On a standby the end
    // of WAL is the last replayed position (pg_current_wal_lsn() fails during recovery).
    const { rows: slots } = await session.query<{ slot_name: string; plugin: string; temporary: boolean; active: boolean; retained: number | null }>(
      `SELECT slot_name, plugin, temporary, active,
              pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::float8 AS retained
         FROM pg_catalog.pg_replication_slots
        WHERE database = current_database() AND slot_type = 'logical' ORDER BY slot_name`,
    );
    const sweeps = await lastSweep(session);
    const counts = outbox[0]!;
    return {
      generatedAt: new Date(),
      windowMs: opts.window,
      tenants: calls.map((row) => ({
        tenantId: row.tenant_id,
        tool: row.tool,
        // A wait ends in an execution (counted there) or a replay (counted here).
        calls: row.executions + row.replays + row.waited_replays + row.key_reuses + row.rate_limited + row.in_progress,
        executions: row.executions,
        replays: row.replays,
        waits: row.waits,
        keyReuses: row.key_reuses,
        rateLimited: row.rate_limited,
        inProgress: row.in_progress,
      })),
      outbox: {
        pending: counts.pending,
        oldestPendingAgeMs: counts.oldest_ms === null ? null : Math.round(counts.oldest_ms),
        dead: counts.dead,
        deliveredInWindow: counts.delivered,
        deliveriesPerSecond: counts.delivered / (opts.window / 1_000),
      },
      tables: tables.map((row) => ({
        table: row.table,
        bytes: Number(row.bytes),
        estimatedRows: Number(row.estimated_rows),
        rows: exact.get(row.table) ?? Number(row.estimated_rows),
        rowsExact: exact.has(row.table),
      })),
      replicationSlots: slots.map((row) => ({
        slot: row.slot_name,
        plugin: row.plugin,
        temporary: row.temporary,
        active: row.active,
        retainedWalBytes: row.retained,
      })),
      sweep: { schedule: opts.sweepSchedule, lastRunAt: 'lastRunAt' in sweeps ? sweeps.lastRunAt : null, nextRunAt: nextSweepAt(opts.sweepSchedule) ?? null },
    };
  });
}
