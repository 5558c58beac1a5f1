/**
 * The relay, from what it leaves in the database: graphile-worker's record of the sweep cron's
 * last tick, and the leases (`locked_by`, `next_attempt_at`) on the outbox events it is
 * delivering. An idle relay leaves nothing behind, so "no relay" is only ever concluded from
 * events that waited too long, never from silence.
 */
import { quoteIdentifier } from '../internal/bind-variables.ts';
import type { RoleNames } from '../internal/role-names.ts';
import type { Session } from '../internal/session.ts';
import { lastSweep, nextSweepAt } from '../sweep-schedule.ts';
import type { DatabaseFacts } from './database-facts.ts';
import { type DoctorFinding, finding } from './finding.ts';

/**
 * How late a sweep tick or a due event may be before it counts as missed: relays poll every few
 * milliseconds and cron ticks land within seconds, so a minute is well past jitter.
 */
export const RELAY_GRACE_MILLISECONDS = 60 * 1_000;

export async function sweepFinding(session: Session, roles: RoleNames, schedule: string, now = new Date()): Promise<DoctorFinding> {
  const record = await lastSweep(session);
  if ('unreadable' in record) {
    return record.unreadable === 'no-worker-schema'
      ? finding('sweep', 'warn', "graphile-worker's schema is not installed: relays cannot schedule sweeps, so expired keys and old events pile up", 'pg-once migrate')
      : finding('sweep', 'unknown', "last sweep not checked: this login may not read graphile-worker's cron record", `run pg-once doctor as a login granted ${roles.relay}`);
  }
  const start = 'start pg-once relay (it schedules sweeps unless its sweep option is false), or run pg-once sweep from a scheduler of your own';
  if (record.lastRunAt === null) {
    return finding('sweep', 'warn', 'no sweep has been scheduled yet: no relay with sweeps on has run against this database (pg-once sweep run by hand leaves no record)', start);
  }
  const due = nextSweepAt(schedule, record.lastRunAt);
  const last = record.lastRunAt.toISOString();
  if (due && due.getTime() + RELAY_GRACE_MILLISECONDS < now.getTime()) {
    return finding(
      'sweep',
      'warn',
      `the last sweep was scheduled at ${last}; ${schedule} expected another by ${due.toISOString()}: no relay with sweeps on has run since`,
      start,
    );
  }
  return finding('sweep', 'ok', `last sweep scheduled at ${last}; next due ${nextSweepAt(schedule, now)?.toISOString() ?? '-'} (${schedule})`);
}

export async function relaysFinding(session: Session, facts: DatabaseFacts, roles: RoleNames): Promise<DoctorFinding> {
  // Forced row-level security shows the outbox of every tenant to the relay role and bypassing
  // roles only; anyone else would count one tenant's events, or none, and conclude wrongly.
  if (!facts.superuser && !facts.bypassRls && !facts.held.includes(roles.relay)) {
    return finding('relays', 'unknown', "relays not checked: only the relay role sees every tenant's outbox events", `run pg-once doctor as a login granted ${roles.relay}`);
  }
  const { rows } = await session.query<{ leasing: string[]; lapsed: string[]; overdue: number }>(
    `SELECT coalesce(array_agg(DISTINCT locked_by) FILTER (WHERE next_attempt_at > now()), '{}') AS leasing,
            coalesce(array_agg(DISTINCT locked_by) FILTER (WHERE next_attempt_at <= now() - $1 * interval '1 millisecond'), '{}') AS lapsed,
            count(*) FILTER (WHERE next_attempt_at <= now() - $1 * interval '1 millisecond')::int AS overdue
       FROM once.outbox_events WHERE status = 'pending'`,
    [RELAY_GRACE_MILLISECONDS],
  );
  const { leasing, lapsed, overdue } = rows[0]!;
  const start = `start pg-once relay as a login granted ${quoteIdentifier(roles.relay)}, or read the running relays' logs`;
  if (overdue > 0) {
    return finding(
      'relays',
      'warn',
      `${overdue} pending event(s) became due over ${RELAY_GRACE_MILLISECONDS / 1_000} s ago and no relay has taken them` +
        (lapsed.length > 0 ? ` (relay ${lapsed.join(', ')} stopped renewing its leases)` : '') +
        ': no relay is delivering, or the relays cannot keep up',
      start,
    );
  }
  if (leasing.length > 0) return finding('relays', 'ok', `${leasing.length} relay(s) delivering now: ${leasing.join(', ')}`);
  return finding(
    'relays',
    'unknown',
    'no relay is delivering right now and no event is waiting: an idle relay leaves no record in the database, so whether one runs is unknown',
    'look for the pg-once relay process itself (its log prints "delivering" at start)',
  );
}
