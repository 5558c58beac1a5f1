/**
 * The relay's own connections, and the one way its statements reach the database.
 *
 * Settings. Each session pins the settings the relay's SQL and its parsing of results depend on,
 * whatever the role or database defaults say (`ALTER ROLE ... SET DateStyle = 'SQL, DMY'` makes
 * node-postgres return null for every timestamp): startup-packet options take precedence over
 * role and database settings, and cost no extra round trip.
 *
 * No connection can stall the relay:
 * - every statement has a server-side statement_timeout (so a stuck claim lets go of its row
 *   locks) AND a client-side query_timeout a little longer (so a statement whose connection went
 *   silent, a half-open TCP connection or a network that drops packets without a reset, fails
 *   instead of waiting forever; the pool then throws that connection away);
 * - opening a connection has a timeout too;
 * - TCP keepalive finds dead peers on idle connections.
 * A pool given by the caller keeps its own settings; the relay still sets query_timeout on each
 * statement it sends, and reads no timestamp as text (see claim-events.ts).
 *
 * Poolers (the relay's `pooler` option). Behind PgBouncer the relay sends no startup options:
 * PgBouncer refuses them (SQLSTATE 08P01, "unsupported startup parameter"), and in transaction
 * mode a session setting would not follow the relay from one server connection to the next
 * anyway. The relay then runs as with a pool of the caller's: the client-side timeout still
 * bounds every statement (PgBouncer closes the server connection of a client that hangs up
 * mid-statement, which ends the statement and its row locks). In transaction mode the statements
 * also go unnamed: PgBouncer before 1.21 sends each to whichever server connection is free, where
 * a statement prepared on another does not exist (26000) or one of another client already does
 * (42P05).
 */
import pg from 'pg';
import { PoolerSettingError } from '../errors.ts';

export type Pooler = 'none' | 'session' | 'transaction';

/** Extra time the client waits past statement_timeout before it gives up on the connection. */
const CLIENT_GRACE_MILLISECONDS = 1_000;
/** TCP keepalive starts probing an idle connection after this long. */
const KEEPALIVE_DELAY_MILLISECONDS = 10_000;

/** What the relay's SQL modules run their statements on. */
export interface RelayDatabase {
  query<R extends pg.QueryResultRow = any>(config: pg.QueryConfig): Promise<pg.QueryResult<R>>;
}

function sessionOptions(statementTimeoutMs: number): string {
  // jit=off: the claim's row estimates grow with the table (a per-tenant LIMIT the planner cannot
  // see through), and past jit_above_cost Postgres compiles it: measured 160 ms of JIT for a claim
  // that runs in 5 ms, on every claim.
  // synchronous_commit=off: every statement of the relay is bookkeeping that is safe to lose
  // (a claim, a lease, an outcome): if the server crashes within the moment before its WAL
  // reaches disk, the event is claimed and delivered again under the same dedupe id, a repeat
  // and never a loss. Writers' commits (the events themselves) keep their own setting. Not
  // waiting for the WAL flush takes a disk round trip out of every claim and settle (on a server
  // with fsync on, the drain bench ran about a quarter faster).
  return `-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c jit=off -c synchronous_commit=off -c statement_timeout=${statementTimeoutMs}`;
}

export function relayConnectionConfig(connectionString: string, statementTimeoutMs: number, pooler: Pooler = 'none'): pg.ClientConfig {
  return {
    connectionString,
    ...(pooler === 'none' ? { options: sessionOptions(statementTimeoutMs) } : {}),
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MILLISECONDS,
    connectionTimeoutMillis: statementTimeoutMs + CLIENT_GRACE_MILLISECONDS,
    query_timeout: statementTimeoutMs + CLIENT_GRACE_MILLISECONDS,
  };
}

/**
 * Plans on a young outbox. The relay's statements are named: after five runs Postgres keeps one
 * generic plan per connection, planned with the table as it was then, until something invalidates
 * it (the table's next VACUUM or ANALYZE, or DDL). A relay started on a new outbox table (or one
 * still small) gets a plan made for a table of a few pages, with no statistics: the claim joined
 * each ordering-key head to its tenant's whole primary-key range, and its UPDATE read the whole
 * heap, so each claim cost time in proportion to the table and its dead tuples (measured on
 * Postgres 18: 2 ms at first, 100-500 ms for 48 events once the table held 40,000 rows and 60,000
 * dead tuples), and delivery fell tens of seconds behind until the table's first autovacuum
 * replaced the plan (docs/performance.md, "Soak"). So a connection opened while the outbox has
 * never been analyzed, or is smaller than YOUNG_OUTBOX_BYTES, plans every statement for the
 * table as it is (plan_cache_mode = force_custom_plan), and the relay's connections are replaced
 * every CONNECTION_LIFETIME_SECONDS, so once the table has grown and has statistics they go back
 * to cached plans.
 *
 * Why 1 MiB (it was 8 until stop 29): custom plans are not free. Planning the claim costs 1-3 ms
 * per claim, and on a drain of 20,000 small events (a 3 MB outbox) the relay's connections spent
 * about 4 us of server CPU per event more than with cached plans (claim 21 -> 18, settle 12.5 ->
 * 11.5 us per event). And a generic plan made on an analyzed table of 1,000 events (300 KB) or
 * more is a good one: the stall's experiment (bench/cached-claim-plan.ts) with the plan made there
 * and 20,000 more events claimed through it kept claims of 100 at 3.4-5.2 ms on Postgres 18.4 and
 * 15, like custom plans; made at 100-300 events (32-96 KB) it drifted to 6-13 ms. So 1 MiB keeps
 * a margin of three times over the size where cached plans are sound.
 */
const YOUNG_OUTBOX_BYTES = 1_048_576;
const CONNECTION_LIFETIME_SECONDS = 300;

/** Sets custom plans for this session if the outbox is young (see above); nothing otherwise, or before migrate. */
export const YOUNG_OUTBOX_PLANS_TEXT = `
SELECT set_config('plan_cache_mode', 'force_custom_plan', false) AS plan_cache_mode
  FROM pg_class c
 WHERE c.oid = to_regclass('once.outbox_events') AND (c.reltuples < 0 OR pg_relation_size(c.oid) < $1::bigint)`;

/**
 * Run on each new connection of the relay's own pool, before it is used. A failure here is left
 * to the statement that follows (a broken connection fails that one too).
 */
export async function planForYoungOutbox(client: pg.ClientBase, youngBytes = YOUNG_OUTBOX_BYTES): Promise<void> {
  await client.query(YOUNG_OUTBOX_PLANS_TEXT, [youngBytes]).catch(() => {});
}

/** Claims, settles, heartbeats and the odd release: a handful of connections is plenty. */
export function createRelayPool(connectionString: string, statementTimeoutMs: number, pooler: Pooler = 'none'): pg.Pool {
  // Behind a pooler a session setting would stay on a server connection other clients then use.
  const plans = pooler === 'none' ? { onConnect: planForYoungOutbox, maxLifetimeSeconds: CONNECTION_LIFETIME_SECONDS } : {};
  return new pg.Pool({ ...relayConnectionConfig(connectionString, statementTimeoutMs, pooler), max: 4, ...plans });
}

/**
 * A pool of the relay's (or a drain's) own, with both error listeners: without them a server
 * restart, or a connection terminated while the pool is ending, is an uncaught exception
 * (docs/getting-started.md, "Connect").
 */
export function ownRelayPool(connectionString: string, statementTimeoutMs: number, pooler: Pooler, warn: (message: string, error: unknown) => void): pg.Pool {
  const pool = createRelayPool(connectionString, statementTimeoutMs, pooler);
  pool.on('error', (error) => warn('idle connection failed', error));
  pool.on('connect', (client) => client.on('error', (error) => warn('connection failed', error)));
  return pool;
}

/**
 * SQLSTATEs of a named statement that met the wrong server connection: invalid_sql_statement_name
 * (prepared on another) and duplicate_prepared_statement (another client prepared it here). Both
 * fail at Parse or Bind, before anything runs, so sending the statement again unnamed is safe.
 */
const MISPLACED_STATEMENT = new Set(['26000', '42P05']);

export interface StatementNaming {
  /** Send statements under their names (prepared once per connection). (Default: true) */
  named: boolean;
  /**
   * Called once if a named statement meets a transaction-mode pooler nobody told the relay
   * about; the statement is sent again unnamed, and so is every later one.
   */
  onMisplaced?: (error: unknown) => void;
}

/**
 * `pool`, with a client-side timeout on every statement (the pool drops a connection that timed
 * out), and the statements' names dropped when a pooler would misroute them (see above).
 */
export function timedDatabase(pool: pg.Pool, statementTimeoutMs: number, naming: StatementNaming = { named: true }): RelayDatabase {
  const queryTimeout = statementTimeoutMs + CLIENT_GRACE_MILLISECONDS;
  let named = naming.named;
  const send = <R extends pg.QueryResultRow>(config: pg.QueryConfig) => pool.query<R>({ ...config, query_timeout: queryTimeout } as pg.QueryConfig);
  const unnamed = ({ name: _name, ...config }: pg.QueryConfig): pg.QueryConfig => config;
  return {
    async query<R extends pg.QueryResultRow>(config: pg.QueryConfig) {
      if (!named || config.name === undefined) return send<R>(unnamed(config));
      try {
        return await send<R>(config);
      } catch (error) {
        if (!MISPLACED_STATEMENT.has((error as { code?: string } | null)?.code ?? '')) throw error;
        if (named) naming.onMisplaced?.(error);
        named = false;
        return send<R>(unnamed(config));
      }
    },
  };
}

/** SQLSTATE protocol_violation: how PgBouncer refuses a startup parameter it does not know. */
const PROTOCOL_VIOLATION = '08P01';

/**
 * A relay whose own connections are refused as they open, with its session settings, by a pooler
 * it was not told about: a PoolerSettingError naming the option to set. Any other error as it is.
 */
export function explainRefusedConnection(error: unknown, pooler: Pooler): unknown {
  if (pooler !== 'none' || (error as { code?: unknown } | null)?.code !== PROTOCOL_VIOLATION) return error;
  return new PoolerSettingError(
    `pg-once: the relay's connection was refused as it opened (${(error as Error).message}), as PgBouncer refuses the ` +
      "session settings the relay sends at connect. Behind a connection pooler, start the relay with `pooler: 'transaction'` " +
      "(or 'session', matching the pooler's pool_mode; `--pooler` on the command line), and give the relay's login its " +
      "settings: ALTER ROLE ... SET statement_timeout = '10s'; ALTER ROLE ... SET jit = off.",
    { cause: error },
  );
}
