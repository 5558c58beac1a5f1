/**
 * Options of the relay's optional wake-up (`startRelay({ wakeup })`), beside the doorbell that
 * reads them (logical-doorbell.ts). Names of slots and publications go into replication commands,
 * which take no parameters: the patterns here are what makes quoting them unnecessary.
 */
import { z } from 'zod';

/** A lower-case identifier a replication slot name may be (a-z, 0-9, _), with room for a suffix. */
const SLOT_PREFIX = /^[a-z_][a-z0-9_]{0,45}$/;
const PUBLICATION_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** The publication sql/0014 creates: inserts into once.outbox_events, two columns, nothing else. */
export const DEFAULT_DOORBELL_PUBLICATION = 'once_outbox_doorbell';
export const DEFAULT_DOORBELL_SLOT_PREFIX = 'once_doorbell';

export const logicalDoorbellSchema = z
  .object({
    /**
     * A connection string for the replication connection, of a login with the REPLICATION
     * attribute (rds_replication on RDS, REPLICATION on Cloud SQL). Required behind a pooler:
     * transaction mode cannot carry a replication stream, and PgBouncer before 1.23 passes none.
     * (Default: the relay's own connection)
     */
    connectionString: z.string().min(1).optional(),
    /**
     * Each relay process creates a TEMPORARY slot named this plus `_` and 8 random hex digits:
     * Postgres drops a temporary slot when its connection ends, crash or not, so no slot is left
     * behind to retain WAL. (Default: 'once_doorbell')
     */
    slotPrefix: z.string().regex(SLOT_PREFIX, 'expected lower-case letters, digits and _ (at most 46)').default(DEFAULT_DOORBELL_SLOT_PREFIX),
    /**
     * The publication streamed: inserts into once.outbox_events. `pg-once migrate` creates the
     * default one; name your own to create it yourself. (Default: 'once_outbox_doorbell')
     */
    publication: z.string().regex(PUBLICATION_NAME, 'expected lower-case letters, digits and _').default(DEFAULT_DOORBELL_PUBLICATION),
    /**
     * WAL the slot may hold back, in bytes, before the relay drops it (and polls, trying again
     * later). The doorbell acknowledges everything it receives at once, but a logical slot's
     * restart point moves only at the server's running-transactions records (every 15 s) and
     * never past the oldest open transaction that wrote: keep this above a minute of the
     * server's WAL volume. (Default: 1 073 741 824, i.e. 1 GiB)
     */
    maxRetainedWalBytes: z.number().int().min(1_048_576).default(1_073_741_824),
  })
  .strict();

export const wakeupSchema = z
  .object({
    /**
     * Wake the relay on each committed outbox insert, read from a logical replication stream
     * (pgoutput) instead of a NOTIFY: writers pay nothing, the server's WAL sender does the work.
     * Needs wal_level = logical and a login with REPLICATION; without them the relay logs why
     * (DOORBELL_UNAVAILABLE) and polls as it does by default. See docs/relay-and-sinks.md, "Doorbell".
     */
    logicalReplication: logicalDoorbellSchema,
  })
  .strict();

/** Options of the relay's logical replication doorbell (`startRelay({ wakeup: { logicalReplication } })`). */
export interface LogicalDoorbellOptions {
  /**
   * A connection string for the replication connection, of a login with the REPLICATION
   * attribute (rds_replication on RDS, REPLICATION on Cloud SQL). Required behind a pooler.
   * (Default: the relay's own connection)
   */
  connectionString?: string;
  /**
   * Each relay process creates a TEMPORARY slot named this plus `_` and 8 random hex digits,
   * dropped by Postgres when its connection ends. (Default: 'once_doorbell')
   */
  slotPrefix?: string;
  /** The publication streamed: inserts into once.outbox_events. (Default: 'once_outbox_doorbell', created by migrate) */
  publication?: string;
  /** WAL the slot may hold back, in bytes, before the relay drops it and polls. (Default: 1 073 741 824, i.e. 1 GiB) */
  maxRetainedWalBytes?: number;
}

/** The relay's optional wake-up: see docs/relay-and-sinks.md, "Doorbell". */
export interface WakeupOptions {
  /**
   * Wake the relay on each committed outbox insert, read from a logical replication stream
   * instead of a NOTIFY; needs wal_level = logical and a login with REPLICATION, else the relay
   * logs DOORBELL_UNAVAILABLE and polls.
   */
  logicalReplication: LogicalDoorbellOptions;
}

export type ResolvedLogicalDoorbellOptions = z.output<typeof logicalDoorbellSchema>;
