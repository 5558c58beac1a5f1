/**
 * The relay's TTL sweeps, on graphile-worker's cron: it records each tick in its own tables and
 * adds the job under a job key, so however many relays run, each tick sweeps once.
 */
import { Logger, run, type Runner } from 'graphile-worker';
import type pg from 'pg';
import type { ResolvedRelayOptions } from './relay-options.ts';
import { sweep } from '../ops/sweep.ts';
import { SWEEP_TASK, sweepCronItems } from '../ops/sweep-schedule.ts';
import type { RelayLog } from './relay-log.ts';

export interface RelaySweeps {
  runner: Runner;
  /** graphile-worker's own pool, when the relay made it (ended after the runner stops). */
  pool: pg.Pool | undefined;
}

/**
 * graphile-worker gets a pool of its own (its LISTEN connection and job queries must not queue
 * behind deliveries), from `ownPool` (so that its connections have the same listeners and
 * settings as the relay's); with a pool of the caller's, it shares that one.
 */
export async function startRelaySweeps(
  options: ResolvedRelayOptions,
  relayPool: pg.Pool,
  ownPool: (() => pg.Pool) | undefined,
  log: RelayLog,
): Promise<RelaySweeps | undefined> {
  const config = options.sweep;
  if (config === false) return undefined;
  const pool = ownPool?.();
  const { schedule, ...sweepOptions } = config;
  const logger = new Logger(() => (level, message) => {
    if (level === 'error') log.error(message, { scope: 'sweeps' });
    else if (level === 'warning') log.warn(message, { scope: 'sweeps' });
  });
  try {
    const runner = await run({
      pgPool: pool ?? relayPool,
      concurrency: 1,
      noHandleSignals: true,
      // graphile-worker's own answer to transaction-mode poolers (its LISTEN only costs latency).
      noPreparedStatements: options.pooler === 'transaction',
      logger,
      taskList: {
        [SWEEP_TASK]: async () => {
          await sweep(relayPool, sweepOptions);
        },
      },
      parsedCronItems: sweepCronItems(schedule),
    });
    return { runner, pool };
  } catch (error) {
    await pool?.end();
    throw error;
  }
}

/** Stops the runner and ends its own pool, if any; errors are not the caller's concern here (a failed start). */
export async function stopRelaySweeps(sweeps: RelaySweeps | undefined): Promise<void> {
  if (sweeps === undefined) return;
  await sweeps.runner.stop().catch(() => {});
  await sweeps.pool?.end().catch(() => {});
}
