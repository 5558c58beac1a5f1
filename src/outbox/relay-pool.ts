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
 */
import pg from 'pg';

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

export function relayConnectionConfig(connectionString: string, statementTimeoutMs: number): pg.ClientConfig {
  return {
    connectionString,
    options: sessionOptions(statementTimeoutMs),
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MILLISECONDS,
    connectionTimeoutMillis: statementTimeoutMs + CLIENT_GRACE_MILLISECONDS,
    query_timeout: statementTimeoutMs + CLIENT_GRACE_MILLISECONDS,
  };
}

/** Claims, settles, heartbeats and the odd release: a handful of connections is plenty. */
export function createRelayPool(connectionString: string, statementTimeoutMs: number): pg.Pool {
  return new pg.Pool({ ...relayConnectionConfig(connectionString, statementTimeoutMs), max: 4 });
}

/** `pool`, with a client-side timeout on every statement (the pool drops a connection that timed out). */
export function timedDatabase(pool: pg.Pool, statementTimeoutMs: number): RelayDatabase {
  const queryTimeout = statementTimeoutMs + CLIENT_GRACE_MILLISECONDS;
  return {
    query: <R extends pg.QueryResultRow>(config: pg.QueryConfig) => pool.query<R>({ ...config, query_timeout: queryTimeout } as pg.QueryConfig),
  };
}
