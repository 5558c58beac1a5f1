/**
 * outboxTasks: a graphile-worker task list that delivers the outbox and sweeps, for teams that
 * already run graphile-worker and would rather not run `pg-once relay` beside it.
 *
 * Delivery is ONE chain of jobs under the job key `once_deliver`, however many workers and
 * runners there are: each job runs drainOnce for a slice (sliceMs), looking for new events every
 * pollIntervalMs while idle, then adds its successor (run at once) under the same key and
 * completes. graphile-worker clears the key of a running job when another is added under it, so
 * at any moment exactly one job holds the key: the one running or the next one. Parallelism comes
 * from drainOnce's `concurrency`, not from several chains (which the claim statement would make
 * safe, but only slower: more claims for the same events). The watchdog, every minute, starts a
 * chain when no live job holds the key: never started, failed out of its attempts, or locked by
 * a worker that died mid-slice (graphile-worker itself frees such a job only after 4 hours).
 *
 * Every relay guarantee carries over because each slice is a drainOnce (see drain-once.ts); a
 * worker's graceful shutdown aborts the slice through the job's abortSignal, which hands back
 * what it held at once.
 */
import type { JobHelpers, TaskList } from 'graphile-worker';
import { quoteIdentifier } from '../../internal/bind-variables.ts';
import { parseOptions } from '../../options.ts';
import { drainOnce } from '../../outbox/drain-once.ts';
import { sweep } from '../../ops/sweep.ts';
import { OUTBOX_TASKS } from './outbox-task-names.ts';
import { type OutboxTasksOptions, outboxTasksOptionsSchema } from './outbox-tasks-options.ts';

/** Attempts of one delivery job: a few quick retries of a database hiccup, then the watchdog's minute. */
const DELIVER_JOB_ATTEMPTS = 5;
/** A delivery job locked this much longer than a slice belongs to a worker that died, in milliseconds. */
const STALE_AFTER_SLICE_MILLISECONDS = 60_000;

export function outboxTasks(options: OutboxTasksOptions): TaskList {
  const { sliceMs, pollIntervalMs, sweep: sweepOptions, workerSchema, ...delivery } = parseOptions(outboxTasksOptionsSchema, options, 'outboxTasks options');
  const nextDelivery = (helpers: JobHelpers) =>
    helpers.addJob(OUTBOX_TASKS.deliver, {}, { jobKey: OUTBOX_TASKS.deliver, jobKeyMode: 'replace', maxAttempts: DELIVER_JOB_ATTEMPTS });
  // A live job holds the key: waiting, retrying (attempts left), or running and not stale.
  const chainAlive = `SELECT 1 FROM ${quoteIdentifier(workerSchema)}.jobs
     WHERE key = $1 AND attempts < max_attempts
       AND (locked_at IS NULL OR locked_at > now() - $2 * interval '1 millisecond') LIMIT 1`;
  return {
    [OUTBOX_TASKS.deliver]: async (_payload, helpers) => {
      await drainOnce({ ...delivery, deadlineMs: sliceMs, pollIntervalMs, signal: helpers.abortSignal });
      // Also after an abort (this worker is stopping): another runner, if any, picks the chain up at once.
      await nextDelivery(helpers);
    },
    [OUTBOX_TASKS.watchdog]: async (_payload, helpers) => {
      const { rows } = await helpers.query(chainAlive, [OUTBOX_TASKS.deliver, sliceMs + STALE_AFTER_SLICE_MILLISECONDS]);
      if (rows.length === 0) await nextDelivery(helpers);
    },
    [OUTBOX_TASKS.sweep]: async () => {
      await sweep(delivery.pool ?? delivery.connectionString!, sweepOptions);
    },
  };
}
