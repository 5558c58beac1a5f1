/**
 * zod schemas for every public option, parsed once at the public boundary, each with the public
 * type beside it: a hand-written interface with a doc comment per field, because a type derived
 * with `z.input<>` emits zod's types into the .d.ts (`z.ZodDefault<z.ZodNumber>`) and loses the
 * comments, so editors would show nothing. test/option-types.test.ts keeps each interface and its
 * schema's input in step. `z.output<>` is the resolved shape used inside. Bad options throw
 * {@link InvalidOptionsError} with every zod issue attached.
 */
import { z } from 'zod';
import { InvalidOptionsError, type OnceIssue } from './errors.ts';
import type pg from 'pg';
import type { DedupeAuditEvent } from './idempotency/audit-event.ts';
import type { Sink } from './outbox/sink.ts';
import type { RelayLogger } from './outbox/relay-logger.ts';
import type { BackoffOptions } from './outbox/backoff.ts';
import { wakeupSchema, type WakeupOptions } from './outbox/doorbell-options.ts';
import { parseDuration } from './internal/duration.ts';
import { DEFAULT_SWEEP_SCHEDULE, sweepCronItems } from './ops/sweep-schedule.ts';
import { textProblem } from './internal/safe-text.ts';
import { rolePrefixProblem } from './internal/role-names.ts';

/** A callback, validated only as "is a function" (zod 4 has no function schema). */
export function callback<F extends (...args: never[]) => unknown>() {
  return z.custom<F>((value) => typeof value === 'function', { message: 'Expected a function' });
}

/** A duration: milliseconds, or text like '7d' or '1h30m' (internal/duration.ts); to milliseconds. */
export const durationSchema = z.union([z.number(), z.string()]).transform((value, context) => {
  const milliseconds = parseDuration(value);
  if (milliseconds === undefined || milliseconds < 0) {
    context.addIssue({ code: 'custom', message: `expected a duration: milliseconds or text like '7d' (got ${JSON.stringify(value)})` });
    return z.NEVER;
  }
  return milliseconds;
});

/** Rows a sweep deletes per statement. */
export const sweepBatchSizeSchema = z.number().int().min(1).max(100_000);

/** A cron expression (UTC, graphile-worker's syntax), refused at once rather than at every tick. */
export const cronSchema = z.string().superRefine((schedule, context) => {
  try {
    sweepCronItems(schedule);
  } catch (error) {
    context.addIssue({ code: 'custom', message: `not a cron schedule: ${(error as Error).message}` });
  }
});

/** A role prefix: see internal/role-names.ts for what is accepted and why. */
export const rolePrefixSchema = z.string().superRefine((prefix, context) => {
  const problem = rolePrefixProblem(prefix);
  if (problem) context.addIssue({ code: 'custom', message: problem });
});

export const migrateOptionsSchema = z
  .object({
    /**
     * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
     * step is needed. (Default: true)
     */
    installWorkerSchema: z.boolean().default(true),
    /**
     * Names this database's roles at install: `<rolePrefix>_app`, `_relay` and `_maintenance`.
     * Roles are cluster-wide, so every database gets its own. Later runs use the installed roles
     * and refuse a different prefix. (Default: `once_<database name>`; see `pg-once roles`)
     */
    rolePrefix: rolePrefixSchema.optional(),
    /** Receives one line per applied migration (after the commit) and per notable step. (Default: silent) */
    onLog: callback<(message: string) => void>().optional(),
  })
  .strict();
/** Options of {@link migrate}. */
export interface MigrateOptions {
  /**
   * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
   * step is needed. (Default: true)
   */
  installWorkerSchema?: boolean;
  /**
   * Names this database's roles at install: `<rolePrefix>_app`, `_relay` and `_maintenance`.
   * Roles are cluster-wide, so every database gets its own. Later runs use the installed roles
   * and refuse a different prefix. (Default: `once_<database name>`; see `pg-once roles`)
   */
  rolePrefix?: string;
  /** Receives one line per applied migration (after the commit) and per notable step. (Default: silent) */
  onLog?: (message: string) => void;
}
export type ResolvedMigrateOptions = z.output<typeof migrateOptionsSchema>;

/** A string stored as an identifier: see internal/safe-text.ts for what is refused and why. */
const safeText = (max: number, min = 1) =>
  z
    .string()
    .min(min)
    .max(max)
    .superRefine((text, context) => {
      const problem = textProblem(text);
      if (problem) context.addIssue({ code: 'custom', message: problem });
    });

const DAY_MILLISECONDS = 24 * 60 * 60 * 1_000;
const MAX_TTL_MILLISECONDS = 10 * 365 * DAY_MILLISECONDS;
/** 1 MiB. */
const DEFAULT_MAX_RESULT_BYTES = 1_048_576;

/** A duration in milliseconds, or a string such as '24h', '15m', '7d', '1h30m'. */
const duration = z.union([z.number(), z.string()]).transform((value, context) => {
  const milliseconds = parseDuration(value);
  if (milliseconds === undefined || milliseconds <= 0 || milliseconds > MAX_TTL_MILLISECONDS) {
    context.addIssue({
      code: 'custom',
      message: `expected a positive duration up to 10 years: milliseconds, or text like '24h', '15m', '7d' (got ${JSON.stringify(value)})`,
    });
    return z.NEVER;
  }
  return milliseconds;
});

export const withTenantOptionsSchema = z
  .object({
    /**
     * Run even if the connection's role bypasses row-level security (superuser or BYPASSRLS), in
     * which case tenants are NOT isolated by the database. (Default: false, or `configure()`'s)
     */
    allowRlsBypass: z.boolean().optional(),
    /**
     * The transaction's idle_in_transaction_session_timeout, in milliseconds, set for it alone
     * (SET LOCAL), and only ever lower than the session's: a client host that vanishes mid-call
     * without closing its connection has its transaction, and the claim in it, ended by the server
     * after this long idle, instead of when TCP keepalive gives up (2 hours by default). Raise it
     * for a fn that pauses longer between two statements; 0 leaves the server's setting.
     * (Default: 60 000)
     */
    idleInTransactionTimeoutMs: z
      .number()
      .int()
      .min(0)
      .max(24 * 60 * 60 * 1_000)
      .optional(),
  })
  .strict();
/** Options of {@link withTenant}. */
export interface WithTenantOptions {
  /**
   * Run even if the connection's role bypasses row-level security (superuser or BYPASSRLS), in
   * which case tenants are NOT isolated by the database. (Default: false, or `configure()`'s)
   */
  allowRlsBypass?: boolean;
  /**
   * The transaction's `idle_in_transaction_session_timeout`, in milliseconds (0 to 86 400 000),
   * set for it alone (SET LOCAL) and never above the session's: a client host that vanishes
   * mid-call without closing its connection has its transaction, and the claim in it, ended by
   * the server after this long idle. 0 leaves the server's setting. (Default: 60 000)
   */
  idleInTransactionTimeoutMs?: number;
}

export const runIdempotentOptionsSchema = z
  .object({
    /**
     * The tool's arguments. Fingerprinted (sha256 of RFC 8785 canonical JSON, so key order never
     * matters); the same key with a different request throws IdempotencyKeyReusedError.
     * (Default: none, and then any later call with a request counts as different)
     */
    request: z.unknown().optional(),
    /** How long the result is kept and replayed: milliseconds or e.g. '24h'. (Default: '24h') */
    ttl: duration.default(DAY_MILLISECONDS),
    /** Part of the key space: a new version never replays an old version's result. (Default: '') */
    version: safeText(64, 0).default(''),
    /** The tool's name, stored for audit and metrics. (Default: none) */
    tool: safeText(128).optional(),
    /**
     * How long a concurrent duplicate waits for the first call to finish, in milliseconds, before
     * IdempotencyInProgressError. (Default: 10 000)
     */
    waitMs: z.number().int().min(0).max(600_000).default(10_000),
    /**
     * Which errors of `fn` are permanent results: stored as a `failed` record and re-thrown on
     * every replay. (Default: none are; the call rolls back and a retry executes afresh)
     */
    storeError: z.custom<(error: unknown) => boolean>((value) => typeof value === 'function').optional(),
    /** Largest result accepted, in bytes of JSON. (Default: 1 048 576, i.e. 1 MiB) */
    maxResultBytes: z.number().int().positive().default(DEFAULT_MAX_RESULT_BYTES),
    /** Called for every dedupe audit event of this call. (Default: `configure()`'s logger) */
    logger: z.custom<(event: DedupeAuditEvent) => void>((value) => typeof value === 'function').optional(),
    /**
     * How many connections of this call's pool (its Kysely instance) may wait for concurrent
     * duplicates at once. A waiting duplicate holds its connection; one that finds this many
     * already waiting answers IdempotencyInProgressError at once instead, so the rest of the pool
     * keeps serving other calls. Keep it below the pool's size. (Default: 4)
     */
    maxWaiting: z.number().int().min(0).max(10_000).default(4),
  })
  .strict();
/** Options of {@link runIdempotent} (and, through them, of the adapters). */
export interface RunIdempotentOptions {
  /**
   * The tool's arguments. Fingerprinted (sha256 of RFC 8785 canonical JSON, so key order never
   * matters); the same key with a different request throws IdempotencyKeyReusedError (422).
   * (Default: none, and then any later call with a request counts as different)
   */
  request?: unknown;
  /**
   * How long the result is kept and replayed: milliseconds, or text such as '15m', '24h', '7d',
   * '1h30m'; at most 10 years. (Default: '24h')
   */
  ttl?: number | string;
  /**
   * Part of the key space, up to 64 characters: a new version never replays an old version's
   * result. (Default: '')
   */
  version?: string;
  /** The tool's name (1..128 characters), stored for audit and metrics. (Default: none) */
  tool?: string;
  /**
   * How long a concurrent duplicate waits for the first call to finish, in milliseconds (0 to
   * 600 000), before IdempotencyInProgressError (409, retryable); the time withTenant queued for
   * a pooled connection counts against it. (Default: 10 000)
   */
  waitMs?: number;
  /**
   * Which errors of `fn` are permanent results: stored as a `failed` record and re-thrown on
   * every replay as a StoredCallError. (Default: none are; the call rolls back and a retry
   * executes afresh)
   */
  storeError?: (error: unknown) => boolean;
  /** Largest result accepted, in bytes of JSON; larger is ResultTooLargeError. (Default: 1 048 576, i.e. 1 MiB) */
  maxResultBytes?: number;
  /** Called for every dedupe audit event of this call. (Default: `configure()`'s logger) */
  logger?: (event: DedupeAuditEvent) => void;
  /**
   * How many connections of this call's pool (its Kysely instance) may wait for concurrent
   * duplicates at once. A waiting duplicate holds its connection; one that finds this many
   * already waiting answers IdempotencyInProgressError at once instead, so the rest of the pool
   * keeps serving other calls. Keep it below the pool's size. (Default: 4)
   */
  maxWaiting?: number;
}
export type ResolvedRunIdempotentOptions = z.output<typeof runIdempotentOptionsSchema>;

export const runIdempotentExternalOptionsSchema = runIdempotentOptionsSchema
  .extend({
    /**
     * How long the committed claim is reserved for this call, in milliseconds. A worker that dies
     * holds the key this long; a live one extends it with heartbeat(). (Default: 60 000)
     */
    leaseMs: z
      .number()
      .int()
      .min(100)
      .max(24 * 60 * 60 * 1_000)
      .default(60_000),
    /** Renew the lease automatically at this interval while fn runs, in milliseconds. (Default: never; call heartbeat()) */
    heartbeatIntervalMs: z.number().int().min(10).optional(),
    /** Cancels the call: fn's signal aborts. (Default: none) */
    signal: z.custom<AbortSignal>((value) => value instanceof AbortSignal).optional(),
    /** Options for the two transactions the call opens. (Default: none) */
    tenantOptions: withTenantOptionsSchema.optional(),
  })
  .strict();
/** Options of {@link runIdempotentExternal}: those of runIdempotent, and the lease's. */
export interface RunIdempotentExternalOptions extends RunIdempotentOptions {
  /**
   * How long the committed claim is reserved for this call, in milliseconds (100 to 86 400 000).
   * A worker that dies holds the key this long; a live one extends it with heartbeat().
   * (Default: 60 000)
   */
  leaseMs?: number;
  /**
   * Renew the lease automatically at this interval while fn runs, in milliseconds (at least 10,
   * at most a third of leaseMs). (Default: never; call heartbeat())
   */
  heartbeatIntervalMs?: number;
  /** Cancels the call: fn's signal aborts; an already-aborted signal claims nothing. (Default: none) */
  signal?: AbortSignal;
  /** Options for the two transactions the call opens. (Default: none) */
  tenantOptions?: WithTenantOptions;
}
export type ResolvedRunIdempotentExternalOptions = z.output<typeof runIdempotentExternalOptionsSchema>;

export const outboxEventSchema = z
  .object({
    /** Where the relay routes the event, e.g. 'orders.created'. */
    topic: safeText(255),
    /** The event body (any JSON value). */
    payload: z.unknown(),
    /**
     * Events sharing an ordering key are delivered in commit order; events without one flow in
     * parallel. (Default: none)
     */
    orderingKey: safeText(255).optional(),
    /** Extra headers passed to the sink: names 1..128 characters, values up to 4 096. (Default: {}) */
    headers: z
      // zod builds the parsed record by assignment, and `result['__proto__'] = value` sets a
      // prototype instead of a key: such a header would vanish silently. Refuse it instead.
      .custom<Record<string, unknown>>(
        (value) => typeof value !== 'object' || value === null || !Object.hasOwn(value, '__proto__'),
        'a header may not be named __proto__',
      )
      .pipe(z.record(safeText(128), safeText(4_096).or(z.literal(''))))
      .default({}),
    /**
     * The id receivers dedupe on: 1..255 characters of `A-Z a-z 0-9 - . _ ~ : / + = @`, so it
     * travels in any header. (Default: inside runIdempotent, derived from tenant, key, version
     * and the event's position in the call; elsewhere a random UUID)
     */
    dedupeId: safeText(255).optional(),
  })
  .strict();
/** An event for {@link enqueue}. */
export interface OutboxEvent {
  /** Where the relay routes the event, e.g. 'orders.created' (1..255 characters). (Required) */
  topic: string;
  /** The event body: any JSON value, at most MAX_PAYLOAD_BYTES of JSON. (Required) */
  payload: unknown;
  /**
   * Events sharing an ordering key (1..255 characters) are delivered in commit order; events
   * without one flow in parallel. (Default: none)
   */
  orderingKey?: string;
  /**
   * Extra headers passed to the sink: names 1..128 characters, string values up to 4 096; no
   * header named `__proto__`. (Default: {})
   */
  headers?: Record<string, unknown>;
  /**
   * The id receivers dedupe on: 1..255 characters of `A-Z a-z 0-9 - . _ ~ : / + = @`, so it
   * travels in any header. (Default: inside runIdempotent, derived from tenant, key, version
   * and the event's position in the call; elsewhere a random UUID)
   */
  dedupeId?: string;
}

/** A sink: a delivery function, optionally with start/close hooks (see src/outbox/sink.ts). */
const sinkSchema = z.custom<Sink>((value) => typeof value === 'function', { message: 'Expected a sink function' });

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
            outboxRetention: durationSchema.optional(),
            auditRetention: durationSchema.optional(),
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

export type { RelayLogger } from './outbox/relay-logger.ts';

/** Parses `input` with `schema`, or throws InvalidOptionsError naming `what` was being parsed. */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(input ?? {});
  if (parsed.success) return parsed.data;
  throw new InvalidOptionsError(what, parsed.error.issues.flatMap(toOnceIssues), { cause: parsed.error });
}

function toOnceIssues(issue: z.core.$ZodIssue): OnceIssue[] {
  // One issue per unknown key, with the key in its path, so callers can find the field without
  // reading messages.
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: [...issue.path, key], message: `unknown option "${key}"`, code: issue.code }));
  }
  // A union (e.g. `false | { ...options }`) reports only "Invalid input"; the branch whose
  // issues reach deepest is the one the caller meant, and its issues name the field.
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const depth = (branch: readonly z.core.$ZodIssue[]) => Math.max(...branch.map((inner) => inner.path.length));
    const meant = [...issue.errors].sort((a, b) => depth(b) - depth(a))[0]!;
    if (depth(meant) > 0) {
      return meant.flatMap((inner) => toOnceIssues({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue));
    }
  }
  return [{ path: issue.path, message: issue.message, code: issue.code }];
}
