/**
 * pg-once's statements sent straight to the two drivers other libraries sit on, shared by the
 * postgres.js adapter and Drizzle's (whose transactions hold a postgres.js or node-postgres
 * client underneath).
 */
import type pg from 'pg';
import type { TransactionSql } from 'postgres';

/**
 * postgres.js's `unsafe` does not prepare by default, and then describes every statement with
 * values before sending it: a round trip more per statement (a fresh call took 9 where Kysely
 * takes 6). pg-once's statements are a handful of fixed texts, so they are prepared once per
 * connection, unless the client was made with `prepare: false` (behind PgBouncer), which wins.
 */
export async function postgresJsQuery<Row>(sql: TransactionSql<any>, text: string, values: readonly unknown[]): Promise<Row[]> {
  return (await sql.unsafe(text, values as never[], { prepare: true })) as unknown as Row[];
}

export async function nodePostgresQuery<Row>(client: pg.ClientBase, text: string, values: readonly unknown[]): Promise<Row[]> {
  return (await client.query(text, values as unknown[])).rows as Row[];
}
