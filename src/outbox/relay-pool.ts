/**
 * The relay's own connections. Each session pins the settings the relay's SQL and its parsing of
 * results depend on, whatever the role or database defaults say (`ALTER ROLE ... SET DateStyle =
 * 'SQL, DMY'` makes node-postgres return null for every timestamp): startup-packet options take
 * precedence over role and database settings, and cost no extra round trip.
 */
import pg from 'pg';

/** Session settings sent in the startup packet of every relay connection. */
export const RELAY_SESSION_OPTIONS = '-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC';

export function relayConnectionConfig(connectionString: string): pg.ClientConfig {
  return { connectionString, options: RELAY_SESSION_OPTIONS };
}

/** Claims, settles, heartbeats and the odd release: a handful of connections is plenty. */
export function createRelayPool(connectionString: string): pg.Pool {
  return new pg.Pool({ ...relayConnectionConfig(connectionString), max: 4 });
}
