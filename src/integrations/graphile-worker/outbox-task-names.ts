/**
 * The task identifiers pg-once adds to a graphile-worker task list, and the job key of the one
 * delivery chain. The sweep's is the relay's own (sweep-schedule.ts), so a relay and a team's
 * runner share its cron record and never sweep twice per tick.
 */
import { SWEEP_TASK } from '../../ops/sweep-schedule.ts';

export const OUTBOX_TASKS = {
  /** Runs one drain slice, then adds itself again under the job key `once_deliver`. */
  deliver: 'once_deliver',
  /** Every minute: starts the delivery chain when no live job holds its key. */
  watchdog: 'once_deliver_watchdog',
  /** TTL sweeps (sweep()). */
  sweep: SWEEP_TASK,
} as const;
