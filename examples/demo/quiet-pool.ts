import pg from 'pg';

/**
 * A pool whose idle connections may die without taking the process down: pg emits 'error' on the
 * pool when the server ends an idle connection, which can happen after pool.end() resolved (it
 * does not wait for the sockets to close) and before the server stops.
 */
export function quietPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => {});
  return pool;
}
