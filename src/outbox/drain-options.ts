/**
 * drainOnce's options: the relay's delivery options (the same schema pieces, so the same bounds
 * and defaults) and what a drain adds: a deadline, a cap, an abort signal.
 */
import type pg from 'pg';
import { z } from 'zod';
import type { RelayLogger } from './relay-logger.ts';
import { relayOptionsSchema } from './relay-options.ts';
import type { BackoffOptions } from './backoff.ts';
import type { Sink } from './sink.ts';

/** The default deadline of a drain, in milliseconds: a function cron's shortest time limit. */
export const DEFAULT_DRAIN_DEADLINE_MILLISECONDS = 10_000;
/** The relay's default delivery timeout, in milliseconds; a drain's is at most half its deadline. */
const RELAY_DELIVERY_TIMEOUT_MILLISECONDS = 30_000;

export interface DrainOnceOptions {
  /** Connection string of a login granted the database's relay role. Give this or `pool`. */
  connectionString?: string;
  /**
   * A pg.Pool of a login granted the database's relay role (not ended by drainOnce). Give this or
   * `connectionString`. Give its role `ALTER ROLE ... SET jit = off` and a statement_timeout, as
   * for the relay.
   */
  pool?: pg.Pool;
  /** Where events go, by topic, exactly as startRelay's `sinks`. Each sink's start() and close() run once per drain. */
  sinks: Record<string, Sink>;
  /**
   * When drainOnce must have returned, in milliseconds from its call. Deliveries are started
   * until a little before it (the last second, or the last quarter of a shorter deadline, is kept
   * for releasing and settling); one still running then is aborted and its event released,
   * uncounted, for the next drain. (Default: 10 000)
   */
  deadlineMs?: number;
  /** The most deliveries this drain starts. (Default: no limit) */
  max?: number;
  /**
   * When nothing is due, look again this often until the deadline, in milliseconds, instead of
   * returning. (Default: none: return as soon as nothing is due and nothing is in flight)
   */
  pollIntervalMs?: number;
  /** Stops the drain early, as the deadline does (what is running is aborted and released). */
  signal?: AbortSignal;
  /** Deliveries in flight at once. (Default: 32) */
  concurrency?: number;
  /** Payload and header bytes (as JSON text) held at once, claimed and not finished. (Default: 16 777 216, i.e. 16 MiB) */
  maxHeldBytes?: number;
  /** Attempts before an event is declared dead, counted across relays and drains. (Default: 25) */
  maxAttempts?: number;
  /** Exponential backoff with jitter between attempts. (Default: 250 ms, doubling, capped at 5 minutes) */
  backoff?: Partial<BackoffOptions>;
  /**
   * How long a started delivery stays reserved, in milliseconds, renewed while it runs; if the
   * process dies (a function killed at its time limit), other drains take its events when this
   * runs out. (Default: 10 000)
   */
  leaseMs?: number;
  /**
   * A delivery still running after this is aborted and counted as a failed attempt, in
   * milliseconds. Must be shorter than deadlineMs, so that a receiver that always hangs uses up
   * its attempts instead of being cut by the deadline (uncounted) forever. (Default: the smaller
   * of 30 000 and half of deadlineMs)
   */
  deliveryTimeoutMs?: number;
  /** The longest any statement may run, in milliseconds (statement_timeout and a client-side timeout). (Default: 10 000) */
  statementTimeoutMs?: number;
  /**
   * The pool mode of a pooler between the drain and Postgres, as the relay's option: behind
   * PgBouncer in transaction mode (Supabase, Neon and most serverless setups) set 'transaction',
   * and the drain uses no named statements and sends no session settings. (Default: 'none')
   */
  pooler?: 'none' | 'session' | 'transaction';
  /**
   * Receives the drain's log lines, as the relay's option: a pino logger (or any `info/warn/error(fields,
   * message)`), or `{ warn(message), error(message, error) }`. (Default: text lines on stderr)
   */
  logger?: RelayLogger;
}

/** What a drain did. Each event counts once, under its outcome. */
export interface DrainResult {
  /** Delivered and settled. */
  delivered: number;
  /** Failed attempts, settled to be retried after their backoff. */
  failed: number;
  /** Declared dead: rejected for good, out of attempts, or found out of attempts at claim. */
  dead: number;
  /** Claimed and handed back uncounted (not started, or cut by the deadline): due at once for the next drain. */
  released: number;
  /**
   * Why it returned: nothing was due (`drained`), the deadline came (`deadline`), `max`
   * deliveries were started (`max`), or `signal` aborted (`aborted`). Anything but `drained` means
   * more may be waiting.
   */
  reason: 'drained' | 'deadline' | 'max' | 'aborted';
}

const relay = relayOptionsSchema.shape;

/** A refinement: its check and the issue it raises. */
type Refinement<O> = [check: (options: O) => boolean, issue: { message: string; path: PropertyKey[] }];

/** The relay's rule: exactly one of connectionString and pool. */
export function oneConnection(): Refinement<{ connectionString?: string | undefined; pool?: unknown }> {
  return [
    (options) => (options.connectionString === undefined) !== (options.pool === undefined),
    { message: 'give exactly one of connectionString and pool', path: ['connectionString'] },
  ];
}

/**
 * deliveryTimeoutMs under the time a drain has (the option `limit`): a delivery cut by the end of
 * that time is handed back uncounted, so a receiver that always hangs must time out first to use
 * up its attempts.
 */
export function timeoutWithin<K extends string>(limit: K): Refinement<{ deliveryTimeoutMs?: number | undefined } & Record<K, number>> {
  return [
    (options) => options.deliveryTimeoutMs === undefined || options.deliveryTimeoutMs < options[limit],
    { message: `deliveryTimeoutMs must be shorter than ${limit} (a delivery cut by its end is not counted as an attempt)`, path: ['deliveryTimeoutMs'] },
  ];
}

export const drainOptionsSchema = z
  .object({
    connectionString: relay.connectionString,
    pool: relay.pool,
    sinks: relay.sinks,
    deadlineMs: z
      .number()
      .int()
      .min(100)
      .max(24 * 60 * 60 * 1_000)
      .default(DEFAULT_DRAIN_DEADLINE_MILLISECONDS),
    max: z.number().int().min(1).optional(),
    pollIntervalMs: z.number().int().min(1).max(60_000).optional(),
    signal: z.custom<AbortSignal>((value) => value instanceof AbortSignal).optional(),
    concurrency: relay.concurrency,
    maxHeldBytes: relay.maxHeldBytes,
    maxAttempts: relay.maxAttempts,
    backoff: relay.backoff,
    leaseMs: relay.leaseMs,
    deliveryTimeoutMs: z.number().int().min(1).optional(),
    statementTimeoutMs: relay.statementTimeoutMs,
    pooler: relay.pooler,
    logger: relay.logger,
  })
  .strict()
  .refine(...oneConnection())
  .refine(...timeoutWithin('deadlineMs'))
  .transform((options) => ({
    ...options,
    deliveryTimeoutMs: options.deliveryTimeoutMs ?? Math.min(RELAY_DELIVERY_TIMEOUT_MILLISECONDS, Math.floor(options.deadlineMs / 2)),
  }));

export type ResolvedDrainOptions = z.output<typeof drainOptionsSchema>;
