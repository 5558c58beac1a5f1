/**
 * Whether this login may SELECT from a table, asked of the catalogs: naming a table in a schema
 * the login may not use is an error ("permission denied for schema"), not an empty answer, and
 * a check that must tell "nothing there" from "could not look" cannot afford to guess from one.
 */
import type { Session } from './session.ts';

export type TableAccess = 'missing' | 'denied' | 'readable';

export async function tableAccess(session: Session, schema: string, table: string): Promise<TableAccess> {
  const { rows } = await session.query<{ readable: boolean }>(
    `SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_table_privilege(c.oid, 'SELECT') AS readable
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, table],
  );
  if (!rows[0]) return 'missing';
  return rows[0].readable ? 'readable' : 'denied';
}
