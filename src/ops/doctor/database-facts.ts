/**
 * What every check needs to know about the login and the database, in one catalog query that any
 * login may run (catalogs are readable without privileges on schema `once`).
 */
import { installedRoleNames, type RoleNames } from '../../internal/role-names.ts';
import type { Session } from '../../internal/session.ts';

export interface DatabaseFacts {
  database: string;
  login: string;
  superuser: boolean;
  bypassRls: boolean;
  /**
   * The roles the login is a member of, directly or through other roles, itself included. Real
   * grants only: a superuser passes every membership test (`pg_has_role`), which would make
   * `postgres` look like the application's login.
   */
  held: readonly string[];
  /** The owner of schema `once` (the role that runs migrate); null when there is no such schema. */
  schemaOwner: string | null;
  /** The roles pg-once's policies name; undefined when pg-once is not installed. */
  roles: RoleNames | undefined;
}

export async function databaseFacts(session: Session): Promise<DatabaseFacts> {
  const { rows } = await session.query<{
    database: string;
    login: string;
    superuser: boolean;
    bypass_rls: boolean;
    held: string[];
    schema_owner: string | null;
  }>(`
    WITH RECURSIVE held(oid) AS (
      SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user
      UNION
      SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN held h ON m.member = h.oid)
    SELECT current_database()::text AS database, current_user::text AS login,
           r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls,
           (SELECT array_agg(g.rolname::text ORDER BY g.rolname) FROM held JOIN pg_catalog.pg_roles g ON g.oid = held.oid) AS held,
           (SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text FROM pg_catalog.pg_namespace n WHERE n.nspname = 'once') AS schema_owner
      FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`);
  const row = rows[0]!;
  return {
    database: row.database,
    login: row.login,
    superuser: row.superuser,
    bypassRls: row.bypass_rls,
    held: row.held,
    schemaOwner: row.schema_owner,
    roles: await installedRoleNames(session),
  };
}
