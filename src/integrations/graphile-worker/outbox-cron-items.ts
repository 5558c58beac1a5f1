/**
 * The cron half of pg-once/graphile-worker: the watchdog every minute (which starts the delivery
 * chain when it is not running) and the sweep on its schedule, as graphile-worker cron items or
 * as crontab lines. graphile-worker schedules each tick once across all runners (its cron record
 * and the items' job keys), so every runner may carry them.
 */
import { type CronItem, parseCronItems } from 'graphile-worker';
import { InvalidOptionsError } from '../../errors.ts';
import { DEFAULT_SWEEP_SCHEDULE, sweepCronItem } from '../../ops/sweep-schedule.ts';
import { OUTBOX_TASKS } from './outbox-task-names.ts';

export interface OutboxCronOptions {
  /** When the sweep runs, a cron expression in UTC, or false to leave sweeps to someone else. (Default: every 5 minutes) */
  sweepSchedule?: string | false;
}

const EVERY_MINUTE = '* * * * *';

/** For `run({ parsedCronItems: parseCronItems([...yours, ...outboxCronItems()]) })`. */
export function outboxCronItems(options: OutboxCronOptions = {}): CronItem[] {
  const schedule = options.sweepSchedule ?? DEFAULT_SWEEP_SCHEDULE;
  const items: CronItem[] = [
    // No backfill, one attempt: a missed minute is the next minute's work.
    {
      task: OUTBOX_TASKS.watchdog,
      identifier: OUTBOX_TASKS.watchdog,
      match: EVERY_MINUTE,
      options: { backfillPeriod: 0, jobKey: OUTBOX_TASKS.watchdog, jobKeyMode: 'replace', maxAttempts: 1 },
    },
    ...(schedule === false ? [] : [sweepCronItem(schedule)]),
  ];
  try {
    parseCronItems(items); // a bad schedule fails here, not at every tick
  } catch (error) {
    throw new InvalidOptionsError('outboxCronItems options', [{ path: ['sweepSchedule'], message: (error as Error).message, code: 'custom' }], {
      cause: error,
    });
  }
  return items;
}

/** The same items as crontab lines, for `run({ crontab })` or a crontab file. */
export function outboxCrontab(options: OutboxCronOptions = {}): string {
  return outboxCronItems(options)
    .map((item) => {
      const { backfillPeriod, jobKey, jobKeyMode, maxAttempts } = item.options ?? {};
      const flags = [
        `id=${item.identifier}`,
        `fill=${Math.round((backfillPeriod ?? 0) / 1_000)}s`,
        `max=${maxAttempts ?? 1}`,
        `jobKey=${jobKey}`,
        `jobKeyMode=${jobKeyMode}`,
      ];
      return `${String(item.match)} ${item.task} ?${flags.join('&')}`;
    })
    .join('\n');
}
