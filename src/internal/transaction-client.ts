/**
 * What the core needs from a caller's transaction, whatever library opened it: run one
 * parameterised statement in it and get its rows (pg-boss's `IDatabase` shape), plus the caller's
 * own transaction object as the identity that per-transaction state is kept under.
 *
 * The core's SQL is written so that every library reads it the same way, since libraries parse
 * values differently (Drizzle leaves timestamps as strings, Prisma reads int8 as BigInt,
 * postgres.js serialises a parameter by the type the server infers for it): parameters are text,
 * numbers, booleans or bytea, never json (a `::jsonb` parameter would be JSON-encoded a second
 * time by postgres.js; `$1::text::jsonb` is not), and results are read as text, boolean or
 * float8, never timestamps.
 */
import type { Statement } from './inline-values.ts';

export interface TransactionClient {
  /**
   * The caller's transaction object (a Kysely Transaction, a pg PoolClient, a Knex trx, ...):
   * state and call contexts are keyed by it, so it must be the object the caller holds.
   */
  readonly owner: object;
  /** Runs one statement with `$1`, `$2`, ... placeholders in the transaction; resolves with its rows. */
  query<Row = Record<string, unknown>>(text: string, values: readonly unknown[]): Promise<Row[]>;
  /**
   * Runs `statement` later in this transaction: right before the transaction's next statement, or
   * in the round trip of its COMMIT when nothing comes between. Offered only in a transaction
   * withTenant opened, where the library's connection takes several statements in one query
   * (src/drivers/merging-connection.ts for Kysely, merging-pg-client.ts for node-postgres clients)
   * or pipelines (pipelined-statements.ts, postgres.js); elsewhere absent, and the caller runs the
   * statement itself.
   */
  defer?(statement: DeferredStatement): void;
}

/** A statement run later (TransactionClient.defer), and what its failure becomes. */
export interface DeferredStatement extends Statement {
  /**
   * Turns the statement's error into the one thrown (from the statement it was sent before, or
   * from COMMIT). `direct` runs statements on the connection at once (never deferred).
   */
  onError(error: unknown, direct: TransactionClient): Promise<never>;
}
