/**
 * Whether a Kysely connection is its server backend's own, so that pg-once's statements may be
 * prepared on it (native-query.ts says why a pooler rules that out). node-postgres's path
 * compares the backend's pid with the one the connection announced at startup; Kysely keeps its
 * node-postgres client private, so here the server is asked which ports its side of the session
 * has, and they are compared with the socket's as node-postgres holds it (seen by the query as it
 * is written, pipelined-query.ts): through a pooler or any proxy they differ. A connection that is
 * not node-postgres's (another dialect), a Unix socket, or any failure: not direct, and the
 * transaction goes the way it always did (merging-connection.ts, simple-protocol merges).
 * Asked once per connection (kysely-driver.ts: until backendChecked), before its first
 * transaction through withTenant.
 */
import { CompiledQuery, type DatabaseConnection } from 'kysely';
import { markDirect } from './native-query.ts';
import { awaitableQuery } from './pipelined-query.ts';

const PORTS = 'SELECT client_port, inet_server_port() AS server_port FROM pg_stat_activity WHERE pid = pg_backend_pid()';

export async function checkKyselyBackend(connection: DatabaseConnection): Promise<void> {
  // Kysely's own node-postgres connection (PostgresDialect) hands its SQL to client.query as it is.
  if (connection.constructor?.name !== 'PostgresConnection') return markDirect(connection, false);
  let socket: { localPort?: unknown; remotePort?: unknown } | undefined;
  const query = awaitableQuery([], { text: PORTS }, (written) => {
    socket = written.stream as typeof socket;
  });
  try {
    const { rows } = await connection.executeQuery<{ client_port: number | null; server_port: number | null }>({
      ...CompiledQuery.raw(PORTS),
      sql: query as unknown as string,
    });
    const [ports] = rows;
    markDirect(
      connection,
      ports !== undefined && typeof socket?.localPort === 'number' && ports.client_port === socket.localPort && ports.server_port === socket.remotePort,
    );
  } catch {
    markDirect(connection, false);
  }
}
