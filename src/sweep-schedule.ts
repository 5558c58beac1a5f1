/**
 * When sweeps run: the relay registers the sweep task with graphile-worker's cron (one job per
 * tick across all relays, thanks to its job key), and `status` works out the next tick the same
 * way, from the same cron expression.
 */
import { parseCronItems } from 'graphile-worker';

export const SWEEP_TASK = 'once_sweep';
/** Every 5 minutes. */
export const DEFAULT_SWEEP_SCHEDULE = '*/5 * * * *';

export function sweepCronItems(schedule: string) {
  return parseCronItems([
    // No backfill: a sweep missed while no relay ran is simply the next sweep's work.
    { task: SWEEP_TASK, identifier: SWEEP_TASK, match: schedule, options: { backfillPeriod: 0, jobKey: SWEEP_TASK, jobKeyMode: 'replace', maxAttempts: 1 } },
  ]);
}

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
