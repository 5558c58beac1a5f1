/** startRelay's options (start-relay.ts); drainOnce's (drain-options.ts) are built from the same pieces. */
import type pg from 'pg';
import { z } from 'zod';
import { callback, durationSchema } from '../options.ts';
import { sweepBatchSizeSchema } from '../ops/sweep.ts';
import { cronSchema, DEFAULT_SWEEP_SCHEDULE } from '../ops/sweep-schedule.ts';
import type { BackoffOptions } from './backoff.ts';
import { type WakeupOptions, wakeupSchema } from './doorbell-options.ts';
import type { RelayLogger } from './relay-logger.ts';
import type { Sink } from './sink.ts';

/** A sink: a delivery function, optionally with start/close hooks (see src/outbox/sink.ts). */
const sinkSchema = callback<Sink>('Expected a sink function');

export const relayOptionsSchema = z
  .object({
    /** Connection string of a login granted the database's relay role. Give this or `pool`. */
    connectionString: z.string().min(1).optional(),
    /**
     * A pg.Pool of a login granted the database's relay role (not ended by stop()). Give this or `connectionString`.
     * The relay cannot pin the settings of a pool it did not create: give the role
     * `ALTER ROLE ... SET jit = off` and a statement_timeout (the relay's own connections have
     * both; each statement still gets a client-side timeout).
     */
    pool: z.custom<pg.Pool>((value) => typeof value === 'object' && value !== null && typeof (value as pg.Pool).query === 'function').optional(),
    /**
     * Where events go, by topic: exact topics, or patterns with NATS-style wildcards (`*` one
     * dot-separated token, `>` the rest): `{ 'orders.*': httpSink(...), '>': fallback }`.
     */
    sinks: z.record(z.string().min(1), sinkSchema).refine((sinks) => Object.keys(sinks).length > 0, 'at least one sink is required'),
    /** Deliveries in flight at once. (Default: 32) */
    concurrency: z.number().int().min(1).max(1_000).default(32),
    /**
     * The most events claimed per round trip and held in the local queue until a delivery slot
     * is free. The queue holds what the slots start in the next 50 ms (measured), at least
     * `concurrency`, at most this: a fast sink drains a backlog in large batches (measured: 512
     * drains 1.5x faster than 128), a slow one holds few events a dead relay would hold.
     * (Default: the larger of 1,024 and 4 x concurrency)
     */
    batchSize: z.number().int().min(1).max(10_000).optional(),
    /**
     * Payload and header bytes (as JSON text) the relay holds at once, claimed and not finished:
     * claims are sized to stay within it (each claim bringing at most a quarter of it), whatever
     * the size of the events. A single event larger than a quarter is still claimed, alone.
     * (Default: 16 777 216, i.e. 16 MiB)
     */
    maxHeldBytes: z.number().int().min(65_536).default(16_777_216),
    /** Attempts before an event is declared dead. (Default: 25) */
    maxAttempts: z.number().int().min(1).max(1_000).default(25),
    /** Exponential backoff with jitter between attempts. (Default: 250 ms, doubling, capped at 5 minutes) */
    backoff: z
      .object({
        /** Delay after the first failure, in milliseconds. (Default: 250) */
        initialMs: z.number().int().min(1).default(250),
        /** Longest delay, in milliseconds. (Default: 300 000) */
        maxMs: z.number().int().min(1).default(300_000),
      })
      .strict()
      .default({ initialMs: 250, maxMs: 300_000 }),
    /**
     * How long a started delivery stays reserved for this relay, in milliseconds, renewed while it
     * runs. A relay that dies releases its started events when this runs out; events it had
     * claimed but not started hold a lease of 750 ms (or this, if shorter), renewed while queued.
     * (Default: 10 000)
     */
    leaseMs: z.number().int().min(500).max(600_000).default(10_000),
    /** A delivery still running after this is aborted and retried, in milliseconds. (Default: 30 000) */
    deliveryTimeoutMs: z.number().int().min(1).default(30_000),
    /**
     * How often a busy relay looks for new events, in milliseconds (an idle one backs off to
     * maxPollIntervalMs). Writers do not NOTIFY (it serialises their commits; see docs), so this
     * bounds the latency of a busy system. (Default: 5)
     */
    pollIntervalMs: z.number().int().min(1).max(60_000).default(5),
    /**
     * The longest an idle relay waits between polls, in milliseconds: it polls every
     * pollIntervalMs while busy, and after a quiet spell every tenth of the time it has been
     * quiet, up to this. Bounds the idle cost (about 1,000 / this statements per second) and the
     * extra wait of the first event after a quiet spell. Never below pollIntervalMs.
     * (Default: 100)
     */
    maxPollIntervalMs: z.number().int().min(1).max(60_000).default(100),
    /**
     * How long stop() may take, in milliseconds, whatever the network does: in-flight deliveries
     * may finish during the first half (at least; up to all but 2 s of it), then the rest are
     * aborted and released and outcomes settled. What does not make it in time is left to the
     * leases. (Default: 10 000)
     */
    shutdownTimeoutMs: z.number().int().min(0).default(10_000),
    /**
     * The longest any statement of the relay may run, in milliseconds: statement_timeout on the
     * relay's own connections, and a client-side timeout (this plus 1 s) on every statement, after
     * which the connection is dropped; so a silent connection (a half-open socket, a network that
     * drops packets) stalls nothing for longer than this. (Default: 10 000)
     */
    statementTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    /**
     * The pool mode of a connection pooler between the relay and Postgres (PgBouncer's
     * `pool_mode`), so the relay uses only what passes through it:
     * - `'none'`: a direct connection. The relay pins its session settings at connect
     *   (statement_timeout, jit = off, DateStyle, ...), uses named prepared statements and LISTENs
     *   for wake-ups.
     * - `'session'`: sends no session settings at connect (PgBouncer refuses the startup
     *   `options` parameter); give the relay's login them instead:
     *   `ALTER ROLE ... SET statement_timeout = '10s'; ALTER ROLE ... SET jit = off`.
     * - `'transaction'`: as `'session'`, and no named prepared statements (PgBouncer before 1.21
     *   sends each to whichever server connection is free, where it does not exist) and no LISTEN
     *   (a notification reaches no one): the relay polls, every `pollIntervalMs`.
     * Statement mode cannot work: pg-once's transactions hold several statements.
     * (Default: 'none')
     */
    pooler: z.enum(['none', 'session', 'transaction']).default('none'),
    /**
     * TTL sweeps, scheduled with graphile-worker's cron (one run per tick across all relays):
     * `{ schedule, batchSize, outboxRetention, auditRetention }`, or false for none.
     * (Default: every 5 minutes, with sweep()'s defaults)
     */
    sweep: z
      .union([
        z.literal(false),
        z
          .object({
            /** A cron expression, in UTC. (Default: every 5 minutes) */
            schedule: cronSchema.default(DEFAULT_SWEEP_SCHEDULE),
            /** As sweep()'s, checked here so that a bad value fails the start, not every tick. */
            batchSize: sweepBatchSizeSchema.optional(),
            outboxRetention: durationSchema().optional(),
            auditRetention: durationSchema().optional(),
          })
          .strict(),
      ])
      .default({ schedule: '*/5 * * * *' }),
    /**
     * An optional wake-up that writers do not pay for: `{ logicalReplication: {} }` wakes the
     * relay on each committed outbox insert (a logical replication stream used as a doorbell).
     * The relay still polls; the doorbell only ends a wait early. (Default: none, polling alone)
     */
    wakeup: wakeupSchema.optional(),
    /** Stop gracefully on SIGTERM and SIGINT. (Default: true) */
    handleSignals: z.boolean().default(true),
    /**
     * Receives the relay's log lines: a pino logger (or a child of one) as it is, or anything of
     * its shape, `info/warn/error(fields, message)`: start and stop with settings and counts,
     * retries (rate-limited per topic), dead events, and trouble. A logger with only
     * `warn(message)` and `error(message, error)` (the first shape) still works, and gets the
     * warnings and errors it always got. See src/outbox/relay-log.ts for what is logged when.
     * (Default: text lines on stderr)
     */
    logger: z
      .custom<RelayLogger>(
        (value) =>
          typeof value === 'object' &&
          value !== null &&
          typeof (value as RelayLogger).warn === 'function' &&
          typeof (value as RelayLogger).error === 'function',
        { message: 'expected a logger with warn and error methods (a pino logger, or { info, warn, error })' },
      )
      .optional(),
  })
  .strict()
  .refine((options) => (options.connectionString === undefined) !== (options.pool === undefined), {
    message: 'give exactly one of connectionString and pool',
    path: ['connectionString'],
  })
  .refine((options) => options.pooler === 'none' || options.wakeup === undefined || options.wakeup.logicalReplication.connectionString !== undefined, {
    message: 'behind a pooler the doorbell needs a direct connectionString of its own (a pooler may not pass replication connections)',
    path: ['wakeup', 'logicalReplication', 'connectionString'],
  });
/** Options of {@link startRelay}. Give exactly one of `connectionString` and `pool`. */
export interface RelayOptions {
  /** Connection string of a login granted the database's relay role. Give this or `pool`. */
  connectionString?: string;
  /**
   * A pg.Pool of a login granted the database's relay role (not ended by stop()). Give this or
   * `connectionString`. The relay cannot pin the settings of a pool it did not create: give the
   * role `ALTER ROLE ... SET jit = off` and a statement_timeout.
   */
  pool?: pg.Pool;
  /**
   * Where events go, by topic: exact topics, or patterns with NATS-style wildcards (`*` one
   * dot-separated token, `>` the rest): `{ 'orders.*': httpSink(...), '>': fallback }`. At least
   * one. (Required)
   */
  sinks: Record<string, Sink>;
  /** Deliveries in flight at once (1 to 1 000). (Default: 32) */
  concurrency?: number;
  /**
   * The most events claimed per round trip and held in the local queue until a delivery slot is
   * free (1 to 10 000). (Default: the larger of 1 024 and 4 x concurrency)
   */
  batchSize?: number;
  /**
   * Payload and header bytes (as JSON text) the relay holds at once, claimed and not finished;
   * at least 65 536. A single event larger than a quarter of it is still claimed, alone.
   * (Default: 16 777 216, i.e. 16 MiB)
   */
  maxHeldBytes?: number;
  /** Attempts before an event is declared dead (1 to 1 000). (Default: 25) */
  maxAttempts?: number;
  /**
   * Exponential backoff with jitter between attempts, in milliseconds.
   * (Default: `{ initialMs: 250, maxMs: 300 000 }`: 250 ms, doubling, capped at 5 minutes)
   */
  backoff?: Partial<BackoffOptions>;
  /**
   * How long a started delivery stays reserved for this relay, in milliseconds (500 to 600 000),
   * renewed while it runs. Events claimed but not started hold 750 ms (or this, if shorter).
   * (Default: 10 000)
   */
  leaseMs?: number;
  /** A delivery still running after this is aborted and retried, in milliseconds. (Default: 30 000) */
  deliveryTimeoutMs?: number;
  /** How often a busy relay looks for new events, in milliseconds (1 to 60 000). (Default: 5) */
  pollIntervalMs?: number;
  /**
   * The longest an idle relay waits between polls, in milliseconds (1 to 60 000): after a quiet
   * spell it polls every tenth of the time it has been quiet, up to this. (Default: 100)
   */
  maxPollIntervalMs?: number;
  /**
   * How long stop() may take, in milliseconds, whatever the network does; what does not make it
   * in time is left to the leases. (Default: 10 000)
   */
  shutdownTimeoutMs?: number;
  /**
   * The longest any statement of the relay may run, in milliseconds (100 to 600 000):
   * statement_timeout on its own connections, and a client-side timeout (this plus 1 s) on every
   * statement. (Default: 10 000)
   */
  statementTimeoutMs?: number;
  /**
   * The pool mode of a connection pooler between the relay and Postgres (PgBouncer's
   * `pool_mode`): 'none' (a direct connection), 'session' or 'transaction'. Statement mode
   * cannot work. See docs/drivers.md, "Poolers". (Default: 'none')
   */
  pooler?: 'none' | 'session' | 'transaction';
  /**
   * TTL sweeps, scheduled with graphile-worker's cron (one run per tick across all relays), or
   * false for none. `schedule` is a cron expression in UTC; the other fields are sweep()'s.
   * (Default: `{ schedule: '*\/5 * * * *' }`, every 5 minutes with sweep()'s defaults)
   */
  sweep?: false | RelaySweepOptions;
  /** Stop gracefully on SIGTERM and SIGINT. (Default: true) */
  handleSignals?: boolean;
  /**
   * Receives the relay's log lines: a pino logger (or a child of one), or anything with
   * `info/warn/error(fields, message)`; a logger with only `warn(message)` and
   * `error(message, error)` still works. (Default: text lines on stderr)
   */
  logger?: RelayLogger;
  /**
   * An optional wake-up besides polling: `{ logicalReplication: { ... } }` wakes the relay on
   * each committed outbox insert through a logical replication slot, at no cost to writers.
   * (Default: none; the relay polls)
   */
  wakeup?: WakeupOptions;
}

/** The relay's sweep schedule and {@link sweep}'s options. */
export interface RelaySweepOptions {
  /** A cron expression, in UTC (graphile-worker's syntax). (Default: '*\/5 * * * *', every 5 minutes) */
  schedule?: string;
  /** Rows deleted per statement (1 to 100 000). (Default: 5 000) */
  batchSize?: number;
  /** Keep delivered outbox events this long: milliseconds or text such as '3d'. (Default: '7d') */
  outboxRetention?: number | string;
  /** Keep audit rows this long: milliseconds or text such as '30d'. (Default: '30d') */
  auditRetention?: number | string;
}
export type ResolvedRelayOptions = z.output<typeof relayOptionsSchema>;
