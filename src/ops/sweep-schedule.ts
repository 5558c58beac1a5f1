/**
 * When sweeps run: the relay registers the sweep task with graphile-worker's cron (one job per
 * tick across all relays, thanks to its job key), and `status` works out the next tick the same
 * way, from the same cron expression.
 */
import { type CronItem, parseCronItems } from 'graphile-worker';
import { z } from 'zod';
import type { Session } from '../internal/session.ts';
import { tableAccess } from '../internal/table-access.ts';

export const SWEEP_TASK = 'once_sweep';
/** Every 5 minutes. */
export const DEFAULT_SWEEP_SCHEDULE = '*/5 * * * *';

/** The sweep's cron item, unparsed (for a crontab of one's own: pg-once/graphile-worker). */
export function sweepCronItem(schedule: string): CronItem {
  // No backfill: a sweep missed while no relay ran is simply the next sweep's work.
  return {
    task: SWEEP_TASK,
    identifier: SWEEP_TASK,
    match: schedule,
    options: { backfillPeriod: 0, jobKey: SWEEP_TASK, jobKeyMode: 'replace', maxAttempts: 1 },
  };
}

export function sweepCronItems(schedule: string) {
  return parseCronItems([sweepCronItem(schedule)]);
}

/** A cron expression (UTC, graphile-worker's syntax), refused at once rather than at every tick (the relay's and the dashboard's). */
export const cronSchema = z.string().superRefine((schedule, context) => {
  try {
    sweepCronItems(schedule);
  } catch (error) {
    context.addIssue({ code: 'custom', message: `not a cron schedule: ${(error as Error).message}` });
  }
});

/** The first minute after `from` (UTC, like graphile-worker) that the schedule matches, within 366 days. */
export function nextSweepAt(schedule: string, from: Date = new Date()): Date | undefined {
  const [item] = sweepCronItems(schedule);
  const at = new Date(from);
  at.setUTCSeconds(0, 0);
  for (let minute = 0; minute < 366 * 24 * 60; minute += 1) {
    at.setUTCMinutes(at.getUTCMinutes() + 1);
    const digest = { min: at.getUTCMinutes(), hour: at.getUTCHours(), date: at.getUTCDate(), month: at.getUTCMonth() + 1, dow: at.getUTCDay() };
    if (item!.match(digest)) return new Date(at);
  }
  return undefined;
}

export type SweepRecord =
  /**
   * `lastRunAt` is null when no sweep has run yet. `source`: once.sweeps, the record of completed
   * sweeps (sql/0008, by the relay's cron or by hand), or, on a schema older than that,
   * graphile-worker's record of the cron's last tick.
   */
  { lastRunAt: Date | null; source: 'sweeps' | 'cron' } | { unreadable: 'no-worker-schema' | 'no-access' };

/**
 * When the last sweep ran. "Never swept" must not be confused with "could not look": an
 * application login may read neither once.sweeps nor graphile-worker's schema.
 */
export async function lastSweep(session: Session): Promise<SweepRecord> {
  const sweeps = await tableAccess(session, 'once', 'sweeps');
  if (sweeps === 'readable') {
    const { rows } = await session.query<{ at: Date | null }>('SELECT max(at) AS at FROM once.sweeps');
    return { lastRunAt: rows[0]?.at ?? null, source: 'sweeps' };
  }
  if (sweeps === 'denied') return { unreadable: 'no-access' };
  const access = await tableAccess(session, 'graphile_worker', '_private_known_crontabs');
  if (access === 'missing') return { unreadable: 'no-worker-schema' };
  if (access === 'denied') return { unreadable: 'no-access' };
  const { rows: ticks } = await session.query<{ last_execution: Date | null }>(
    'SELECT last_execution FROM graphile_worker._private_known_crontabs WHERE identifier = $1',
    [SWEEP_TASK],
  );
  return { lastRunAt: ticks[0]?.last_execution ?? null, source: 'cron' };
}
