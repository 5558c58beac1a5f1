/**
 * outboxTasks' options: drainOnce's delivery options, plus how long a delivery job runs, how
 * often it looks for new events, and what the sweep task keeps.
 */
import type pg from 'pg';
import { z } from 'zod';
import { drainOptionsSchema, oneConnection, timeoutWithin } from '../../outbox/drain-options.ts';
import type { DrainOnceOptions } from '../../outbox/drain-options.ts';
import type { SweepOptions } from '../../ops/sweep.ts';
import { sweepOptionsSchema } from '../../ops/sweep.ts';

export interface OutboxTasksOptions extends Omit<DrainOnceOptions, 'deadlineMs' | 'max' | 'pollIntervalMs' | 'signal' | 'pool' | 'connectionString'> {
  /** Connection string of a login granted the database's relay role (not the worker's role, unless it is one). Give this or `pool`. */
  connectionString?: string;
  /** A pg.Pool of a login granted the database's relay role; not ended by the tasks. Give this or `connectionString`. */
  pool?: pg.Pool;
  /**
   * How long one delivery job runs before it adds the next one and completes, in milliseconds.
   * Longer: fewer setups (role check, clock, sinks' start and close, a pool); shorter: the chain
   * is picked up again sooner after a worker crash (the watchdog restarts it once its job has
   * been locked this long plus a minute). (Default: 30 000)
   */
  sliceMs?: number;
  /** How often a delivery job with nothing to do looks for new events, in milliseconds: the latency of a quiet outbox. (Default: 100) */
  pollIntervalMs?: number;
  /** sweep()'s options for the sweep task (the schedule is the cron item's: outboxCronItems). (Default: sweep()'s) */
  sweep?: SweepOptions;
  /** graphile-worker's schema, if the runner was given another (`schema` option): the watchdog reads its jobs view. (Default: 'graphile_worker') */
  workerSchema?: string;
}

const drain = drainOptionsSchema.in.shape;

export const outboxTasksOptionsSchema = z
  .object({
    connectionString: drain.connectionString,
    pool: drain.pool,
    sinks: drain.sinks,
    concurrency: drain.concurrency,
    maxHeldBytes: drain.maxHeldBytes,
    maxAttempts: drain.maxAttempts,
    backoff: drain.backoff,
    leaseMs: drain.leaseMs,
    deliveryTimeoutMs: drain.deliveryTimeoutMs,
    statementTimeoutMs: drain.statementTimeoutMs,
    pooler: drain.pooler,
    logger: drain.logger,
    sliceMs: z
      .number()
      .int()
      .min(1_000)
      .max(60 * 60 * 1_000)
      .default(30_000),
    pollIntervalMs: z.number().int().min(1).max(60_000).default(100),
    sweep: sweepOptionsSchema.optional(),
    workerSchema: z.string().min(1).max(63).default('graphile_worker'),
  })
  .strict()
  .refine(...oneConnection())
  .refine(...timeoutWithin('sliceMs'));
