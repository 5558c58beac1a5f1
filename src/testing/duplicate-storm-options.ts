/**
 * The options of duplicateStorm: a hand-written interface (so editors show each field's doc
 * comment) and the zod schema that parses it, kept in step by a type test.
 */
import { z } from 'zod';
import type { DatabaseTarget } from '../internal/session.ts';
import { callback, parseOptions } from '../options.ts';

/** Kill by cutting the call's connection: its backend is terminated from another connection. */
export interface StormTerminate {
  /**
   * The connection that terminates the backend (`pg_terminate_backend`): a connection string, a
   * `pg.Pool` or a Kysely instance, logged in as a superuser, as a member of the handler login's
   * role, or as a member of `pg_signal_backend`. Not the pool the handler uses.
   */
  terminate: DatabaseTarget;
  /**
   * The backend process id of the transaction given to `copy.inside(tx)`. (Default: asks the
   * transaction itself, `SELECT pg_backend_pid()`, for a Kysely `Transaction` (the root API) or a
   * node-postgres client (`pg-once/pg`); other libraries pass their own.)
   */
  backendPid?: (tx: any) => Promise<number>;
}

export interface DuplicateStormOptions {
  /**
   * How many duplicates are fired at once while the first call is still inside its transaction.
   * (Default: 8)
   */
  copies?: number;
  /**
   * At most this many of those copies in flight at once. The handler's pool needs room for them
   * plus the `timeouts` retries plus one. (Default: `copies`)
   */
  concurrency?: number;
  /**
   * Copies killed mid-call before the burst, one after another: each executes, reaches
   * `copy.inside()`, and dies there before it commits. (Default: 1)
   */
  kills?: number;
  /**
   * How a copy is killed. `'throw'`: `copy.inside()` throws, so the handler dies before commit and
   * its transaction is rolled back by the client. `{ terminate }`: its backend is terminated
   * (`pg_terminate_backend`) while the transaction is open, so the server aborts it and the
   * client sees its connection die, as when the process or the network dies. (Default: 'throw')
   */
  kill?: 'throw' | StormTerminate;
  /**
   * Retries from a client that gave up waiting: while the first call is held inside its
   * transaction, one more copy is sent every `timeoutMs`, this many times. (Default: 2)
   */
  timeouts?: number;
  /** The client's deadline before it gives up and retries, in milliseconds. (Default: 50) */
  timeoutMs?: number;
  /**
   * How long the executing copy is held inside its transaction after the last timeout retry was
   * sent, so that every duplicate meets its claim in progress, in milliseconds. (Default: 200)
   */
  holdMs?: number;
  /**
   * Refusals a client retries (pg-once's 409 IDEMPOTENCY_IN_PROGRESS: a duplicate waited past
   * `waitMs`) are retried after their `retryAfterMs`, at most this many times per copy.
   * (Default: 50)
   */
  maxBusyRetries?: number;
  /**
   * The longest pause before a busy copy is sent again, in milliseconds: a refusal's own
   * `retryAfterMs` is honoured when shorter. (Default: 1 000)
   */
  maxRetryAfterMs?: number;
  /**
   * Whether an error is such a refusal. (Default: errors with `retryable: true`, as pg-once's
   * coded errors have)
   */
  isBusy?: (error: unknown) => boolean;
  /**
   * Counts the effect the handler must have had once (rows, events, calls to a fake provider),
   * read after the storm. Give this or `checkEffects`.
   */
  countEffects?: () => number | Promise<number>;
  /** What `countEffects()` must return. (Default: 1) */
  expectedEffects?: number;
  /**
   * Checks the effects after the storm: throws, or returns false, when they are wrong. Give this
   * or `countEffects`.
   */
  checkEffects?: () => unknown;
}

const count = (min: number) => z.number().int().min(min).max(10_000);
const milliseconds = z.number().int().min(0).max(600_000);

export const duplicateStormOptionsSchema = z
  .object({
    copies: count(1).default(8),
    concurrency: count(1).optional(),
    kills: count(0).default(1),
    kill: z
      .union([
        z.literal('throw'),
        z
          .object({
            terminate: z.custom<DatabaseTarget>((value) => typeof value === 'string' || (typeof value === 'object' && value !== null), {
              message: 'expected a connection string, a pg.Pool or a Kysely instance',
            }),
            backendPid: callback<(tx: any) => Promise<number>>().optional(),
          })
          .strict(),
      ])
      .default('throw'),
    timeouts: count(0).default(2),
    timeoutMs: milliseconds.default(50),
    holdMs: milliseconds.default(200),
    maxBusyRetries: count(0).default(50),
    maxRetryAfterMs: milliseconds.default(1_000),
    isBusy: callback<(error: unknown) => boolean>().optional(),
    countEffects: callback<() => number | Promise<number>>().optional(),
    expectedEffects: z.number().int().min(0).default(1),
    checkEffects: callback<() => unknown>().optional(),
  })
  .strict()
  .refine((options) => options.countEffects !== undefined || options.checkEffects !== undefined, {
    message: 'give countEffects or checkEffects: the storm asserts one effect',
    path: ['countEffects'],
  });

export type ResolvedStormOptions = z.output<typeof duplicateStormOptionsSchema> & { concurrency: number };

export function parseStormOptions(options: DuplicateStormOptions): ResolvedStormOptions {
  const parsed = parseOptions(duplicateStormOptionsSchema, options, 'duplicateStorm options');
  return { ...parsed, concurrency: parsed.concurrency ?? parsed.copies };
}
