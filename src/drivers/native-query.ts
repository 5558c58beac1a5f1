/**
 * pg-once's statements sent straight to the two drivers other libraries sit on, shared by the
 * postgres.js adapter and Drizzle's (whose transactions hold a postgres.js or node-postgres
 * client underneath), node-postgres's and Knex's.
 */
import type pg from 'pg';
import type { Sql } from 'postgres';
import type { TransactionClient } from '../internal/transaction-client.ts';

/**
 * postgres.js's `unsafe` does not prepare by default, and then describes every statement with
 * values before sending it: a round trip more per statement (a fresh call took 9 where Kysely
 * takes 6). pg-once's statements are a handful of fixed texts, so they are prepared once per
 * connection, unless the client was made with `prepare: false` (behind PgBouncer), which wins.
 */
export async function postgresJsQuery<Row>(sql: Pick<Sql<any>, 'unsafe'>, text: string, values: readonly unknown[]): Promise<Row[]> {
  return (await sql.unsafe(text, values as never[], { prepare: true })) as unknown as Row[];
}

/**
 * Statements on a postgres.js pool, outside any transaction: the onError of a stored result whose
 * transaction has ended (pipelined-statements.ts).
 */
export const postgresJsOutside = (sql: Pick<Sql<any>, 'unsafe'>): TransactionClient => ({
  owner: sql,
  query: (text, values) => postgresJsQuery(sql, text, values),
});

/**
 * node-postgres sends a statement unnamed unless told a name, and the server then parses and
 * plans it on every call: for pg-once's statements (the tenant, the claim, the stored result)
 * that was about 40% of the server CPU a fresh call costs (measured: bench/drivers.ts). They are
 * sent as named statements instead (parsed once per connection), but only on a connection that
 * is its server backend's own: behind a transaction-mode pooler (PgBouncer before 1.21) a named
 * statement meets server connections that never parsed it, and fails inside the caller's
 * transaction. A pooler answers the startup with a cancel key of its own, so a connection is
 * direct when the backend's pid is the one it announced (asked once per connection, riding on
 * the tenant's statement there: no round trip of its own). pg-native clients (no processID)
 * stay unnamed.
 */
export async function nodePostgresQuery<Row>(
  client: pg.ClientBase,
  text: string,
  values: readonly unknown[],
  send: SendQuery = (query, queryValues) => (queryValues === undefined ? client.query(query) : client.query(query as string, queryValues)),
): Promise<Row[]> {
  const direct = directConnections.get(client);
  if (direct === undefined) return (await checkingBackend(client, text, values, send)) as Row[];
  const name = direct && values.length > 0 ? statementName(client, text) : undefined;
  if (name === undefined) return (await send(text, values as unknown[])).rows as Row[];
  try {
    return (await send({ name, text, values: values as unknown[] })).rows as Row[];
  } catch (error) {
    noteNamedFailure(client, error);
    throw error;
  }
}

/** How a query goes to the client: its `query`, or the method behind a wrapper (merging-pg-client.ts). */
export type SendQuery = (query: string | pg.QueryConfig, values?: unknown[]) => Promise<pg.QueryResult>;

/**
 * After a named statement failed: when the statement is gone (DEALLOCATE ALL, DISCARD ALL) or its
 * plan no longer fits (a migration changed a function's result type), this transaction has
 * failed, and the next ones use new names.
 */
export function noteNamedFailure(client: object, error: unknown): void {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === '26000' || code === '0A000') generations.set(client, (generations.get(client) ?? 0) + 1);
}

/**
 * The name `text` has as a prepared statement on `client`, or undefined on a connection whose
 * statements stay unnamed (behind a pooler, not yet checked, pg-native), or once the bounded set
 * of names is full.
 */
export function preparedName(client: object, text: string): string | undefined {
  return directConnections.get(client) === true ? statementName(client, text) : undefined;
}

/**
 * Whether `client` has been checked for a backend of its own. pg-once/pg sends withTenant's
 * statement with BEGIN (simple protocol, past nodePostgresQuery) only on checked connections, so
 * that every pooled connection gets its check, on the tenant's statement, once.
 */
export const backendChecked = (client: object): boolean => directConnections.has(client);

/** Whether `connection` was found to be its backend's own. */
export const isDirect = (connection: object): boolean => directConnections.get(connection) === true;

/** Records what a check of `connection`'s backend found (a Kysely connection's: kysely-backend-check.ts). */
export function markDirect(connection: object, direct: boolean): void {
  directConnections.set(connection, direct);
}

/** Per connection: true when it is its backend's own (statements may be named), false behind a pooler. */
const directConnections = new WeakMap<object, boolean>();
/** Per connection: how many times its named statements had to be given up (their names change with it). */
const generations = new WeakMap<object, number>();
/** Each statement text's number, for its name; a bounded set (a text made per call would fill servers with statements). */
const statementNumbers = new Map<string, number>();
const MAX_NAMED_STATEMENTS = 100;
/** withTenant's statement (and its read-committed variant): a column more there changes nothing the core reads. */
const LEADING_SELECT = /^\s*SELECT\s+(?=set_config\()/i;
const BACKEND_PID = 'once_backend_pid';

function statementName(client: object, text: string): string | undefined {
  let number = statementNumbers.get(text);
  if (number === undefined) {
    if (statementNumbers.size >= MAX_NAMED_STATEMENTS) return undefined;
    number = statementNumbers.size;
    statementNumbers.set(text, number);
  }
  const generation = generations.get(client);
  return generation === undefined ? `once_${number}` : `once_${number}_${generation}`;
}

/** A statement on a connection not yet checked: unnamed, and the tenant's asks for the backend's pid besides. */
async function checkingBackend(client: pg.ClientBase, text: string, values: readonly unknown[], send: SendQuery): Promise<unknown[]> {
  const announced = (client as { processID?: unknown }).processID;
  if (typeof announced !== 'number' || !LEADING_SELECT.test(text)) {
    if (typeof announced !== 'number') directConnections.set(client, false);
    return (await send(text, values as unknown[])).rows;
  }
  const { rows } = await send(
    text.replace(LEADING_SELECT, (select) => `${select}pg_backend_pid() AS ${BACKEND_PID}, `),
    values as unknown[],
  );
  const first = rows[0] as Record<string, unknown> | undefined;
  if (first === undefined) return rows;
  directConnections.set(client, first[BACKEND_PID] === announced);
  for (const row of rows) delete (row as Record<string, unknown>)[BACKEND_PID];
  return rows;
}
