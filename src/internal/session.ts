/**
 * One database connection held for a unit of work, whatever the caller gave us: a connection
 * string, a `pg.Pool` or a Kysely instance. Migrations need a single connection (a transaction and
 * its advisory lock live on one session); this is that connection, behind one method
 * (pg-boss's `IDatabase` shape) so the code above it does not care where it came from.
 */
import pg from 'pg';
import { CompiledQuery, type Kysely } from 'kysely';

export interface Session {
  /** Runs one statement (or, without values, several separated by semicolons). */
  query<Row = Record<string, unknown>>(text: string, values?: readonly unknown[]): Promise<{ rows: Row[] }>;
}

export type DatabaseTarget = string | pg.Pool | Kysely<any>;

function isKysely(target: object): target is Kysely<any> {
  // Duck-typed: `instanceof` fails when the app and pg-once resolve different copies of kysely.
  return typeof (target as Kysely<any>).connection === 'function' && typeof (target as Kysely<any>).executeQuery === 'function';
}

export async function withSession<T>(target: DatabaseTarget, fn: (session: Session) => Promise<T>): Promise<T> {
  if (typeof target === 'string') {
    const client = new pg.Client({ connectionString: target });
    await client.connect();
    try {
      return await fn(clientSession(client));
    } finally {
      await client.end();
    }
  }
  if (isKysely(target)) {
    return target.connection().execute((connection) =>
      fn({
        async query<Row>(text: string, values: readonly unknown[] = []) {
          // An empty parameter list makes pg use the simple query protocol, which accepts several
          // statements in one string: migration files rely on that.
          const result = await connection.executeQuery<Row>(CompiledQuery.raw(text, [...values]));
          return { rows: [...result.rows] };
        },
      }),
    );
  }
  const client = await target.connect();
  let released = false;
  try {
    return await fn(clientSession(client));
  } catch (error) {
    // A connection that failed mid-transaction is destroyed rather than returned to the pool
    // still inside an aborted transaction.
    client.release(error instanceof Error ? error : true);
    released = true;
    throw error;
  } finally {
    if (!released) client.release();
  }
}

function clientSession(client: pg.ClientBase): Session {
  return {
    async query<Row>(text: string, values?: readonly unknown[]) {
      const result = await client.query(text, values === undefined ? undefined : [...values]);
      return { rows: result.rows as Row[] };
    },
  };
}
