/**
 * The relay, from what it leaves in the database: its row in once.relays (seen_at renewed every
 * 30 s while it runs), once.sweeps (every completed sweep), and the leases (`locked_by`,
 * `next_attempt_at`) on the outbox events it is delivering. On a schema older than sql/0008
 * there is no registry: an idle relay leaves nothing behind, and "no relay" is then only ever
 * concluded from events that waited too long, never from silence.
 */
import { quoteIdentifier } from '../../internal/bind-variables.ts';
import type { RoleNames } from '../../internal/role-names.ts';
import type { Session } from '../../internal/session.ts';
import { tableAccess } from '../../internal/table-access.ts';
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
      ? finding(
          'sweep',
          'warn',
          "graphile-worker's schema is not installed: relays cannot schedule sweeps, so expired keys and old events pile up",
          'pg-once migrate',
        )
      : finding(
          'sweep',
          'unknown',
          'last sweep not checked: this login may not read the record of sweeps',
          `run pg-once doctor as a login granted ${roles.relay}`,
        );
  }
  const start = 'start pg-once relay (it schedules sweeps unless its sweep option is false), or run pg-once sweep from a scheduler of your own';
  const ran = record.source === 'sweeps' ? 'ran' : 'was scheduled';
  if (record.lastRunAt === null) {
    return finding('sweep', 'warn', 'no sweep has run yet: no relay with sweeps on has run against this database, and nobody ran pg-once sweep', start);
  }
  const due = nextSweepAt(schedule, record.lastRunAt);
  const last = record.lastRunAt.toISOString();
  if (due && due.getTime() + RELAY_GRACE_MILLISECONDS < now.getTime()) {
    return finding(
      'sweep',
      'warn',
      `the last sweep ${ran} at ${last}; ${schedule} expected another by ${due.toISOString()}: no relay with sweeps on has run since`,
      start,
    );
  }
  return finding('sweep', 'ok', `last sweep ${ran} at ${last}; next due ${nextSweepAt(schedule, now)?.toISOString() ?? '-'} (${schedule})`);
}

export async function relaysFinding(session: Session, facts: DatabaseFacts, roles: RoleNames): Promise<DoctorFinding> {
  // Forced row-level security shows the outbox of every tenant to the relay role and bypassing
  // roles only; anyone else would count one tenant's events, or none, and conclude wrongly.
  if (!facts.superuser && !facts.bypassRls && !facts.held.includes(roles.relay)) {
    return finding(
      'relays',
      'unknown',
      "relays not checked: only the relay role sees every tenant's outbox events",
      `run pg-once doctor as a login granted ${roles.relay}`,
    );
  }
  const { rows } = await session.query<{ leasing: string[]; lapsed: string[]; overdue: number }>(
    `SELECT coalesce(array_agg(DISTINCT locked_by) FILTER (WHERE next_attempt_at > now()), '{}') AS leasing,
            coalesce(array_agg(DISTINCT locked_by) FILTER (WHERE next_attempt_at <= now() - $1 * interval '1 millisecond'), '{}') AS lapsed,
            count(*) FILTER (WHERE next_attempt_at <= now() - $1 * interval '1 millisecond')::int AS overdue
       FROM once.outbox_events WHERE status = 'pending'`,
    [RELAY_GRACE_MILLISECONDS],
  );
  const { leasing, lapsed, overdue } = rows[0]!;
  const seen = await relaysSeen(session);
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
  if (seen !== undefined && seen.length > 0) {
    return finding('relays', 'ok', `${seen.length} relay(s) seen in the last ${RELAY_SEEN_WITHIN_SECONDS} s: ${seen.join(', ')}`);
  }
  // Leases without a registry row: a relay of an older pg-once, or one whose row failed to write.
  if (leasing.length > 0) return finding('relays', 'ok', `${leasing.length} relay(s) delivering now: ${leasing.join(', ')}`);
  if (seen !== undefined) {
    return finding('relays', 'warn', `no relay seen in the last ${RELAY_SEEN_WITHIN_SECONDS} s: events written now would wait until one starts`, start);
  }
  return finding(
    'relays',
    'unknown',
    'no relay is delivering right now and no event is waiting, and this schema has no relay registry (sql/0008): whether one runs is unknown',
    'pg-once migrate (then relays record themselves in once.relays)',
  );
}

/** A running relay renews seen_at every 30 s (outbox/sql/relay-registry.ts): 2 minutes is 4 misses. */
const RELAY_SEEN_WITHIN_SECONDS = 120;

/** Relays seen recently and not stopped, as `id (host pid, since ...)`; undefined without a registry. */
async function relaysSeen(session: Session): Promise<string[] | undefined> {
  if ((await tableAccess(session, 'once', 'relays')) !== 'readable') return undefined;
  const { rows } = await session.query<{ relay_id: string; host: string; pid: number; started_at: Date }>(
    `SELECT relay_id, host, pid, started_at FROM once.relays
      WHERE stopped_at IS NULL AND seen_at > now() - $1 * interval '1 second' ORDER BY started_at`,
    [RELAY_SEEN_WITHIN_SECONDS],
  );
  return rows.map((row) => `${row.relay_id} (${row.host} pid ${row.pid}, since ${row.started_at.toISOString()})`);
}
