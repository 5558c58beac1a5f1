/**
 * The three group roles of one database's pg-once: `<prefix>_app`, `<prefix>_relay` and
 * `<prefix>_maintenance`. Roles are cluster-wide in Postgres, so a name shared by two databases
 * would let a login of one into the other: each database gets names of its own, derived from
 * the database's name at install (`once_<database>`) unless the operator picks a prefix.
 *
 * Once installed, the names are read back from the policies they hold (`pg_policies` is readable
 * by every login), never re-derived: a database restored or cloned under another name keeps the
 * roles its policies name.
 */
import { createHash } from 'node:crypto';
import type { Session } from './session.ts';
import { tableAccess } from './table-access.ts';

export interface RoleNames {
  /** The application: its own tenant's rows. */
  app: string;
  /** The relay and the operators' commands: every tenant's outbox events, no results. */
  relay: string;
  /** NOLOGIN owner of the SECURITY DEFINER sweep and count functions. Nothing logs in as it. */
  maintenance: string;
}

/** The names of 0001-0004, cluster-wide; databases still on them move off with 0005. */
export const LEGACY_ROLE_NAMES: RoleNames = { app: 'once_app', relay: 'once_relay', maintenance: 'once_maintenance' };

/** Whether these are the cluster-wide roles of a database that has not run 0005 yet. */
export function isLegacyRoles(roles: RoleNames): boolean {
  return roles.app === LEGACY_ROLE_NAMES.app;
}

/**
 * Lower-case letters, digits and `_`, starting with a letter or `_`: a name that needs no quoting
 * anywhere (SQL, `psql -v`, shell). 48 characters leave room for `_maintenance` within the
 * 63 bytes of a Postgres identifier.
 */
const ROLE_PREFIX = /^[a-z_][a-z0-9_]{0,47}$/;
const DATABASE_PART_MAX_LENGTH = 34;

export function rolePrefixProblem(prefix: string): string | undefined {
  if (!ROLE_PREFIX.test(prefix)) {
    return 'a role prefix is 1 to 48 characters of a-z, 0-9 and _, starting with a letter or _';
  }
  if (prefix.startsWith('pg_')) return 'a role prefix may not start with pg_ (reserved by Postgres)';
  return undefined;
}

export function roleNamesFor(prefix: string): RoleNames {
  return { app: `${prefix}_app`, relay: `${prefix}_relay`, maintenance: `${prefix}_maintenance` };
}

/**
 * `once_<database>`, with anything outside a-z0-9_ replaced and a long name cut; when either
 * happened, 6 hex digits of the name's sha256 keep `shop-eu` and `shop_eu` apart.
 */
export function defaultRolePrefix(databaseName: string): string {
  const cleaned = databaseName.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  const part = cleaned.slice(0, DATABASE_PART_MAX_LENGTH);
  if (part === databaseName) return `once_${part}`;
  const digest = createHash('sha256').update(databaseName).digest('hex').slice(0, 6);
  return `once_${part}_${digest}`;
}

/**
 * The roles of this database's pg-once, or undefined before it is installed: from `once.roles`
 * (the record made at install) when this login may read it, else from the policies that name
 * them, which every login may read (catalogs need no privilege on schema `once`).
 */
export async function installedRoleNames(session: Session): Promise<RoleNames | undefined> {
  const { rows } = await session.query<{ app: string | null; relay: string | null; maintenance: string | null }>(
    (await tableAccess(session, 'once', 'roles')) === 'readable'
      ? `SELECT max(name) FILTER (WHERE kind = 'app') AS app, max(name) FILTER (WHERE kind = 'relay') AS relay,
                max(name) FILTER (WHERE kind = 'maintenance') AS maintenance FROM once.roles`
      : `SELECT ${INSTALLED_ROLE_COLUMNS}`,
  );
  const row = rows[0];
  if (!row?.app || !row.relay || !row.maintenance) return undefined;
  return { app: row.app, relay: row.relay, maintenance: row.maintenance };
}

/** One policy that only that role holds, for each kind (see sql/baseline/0005_baseline.sql). */
const policyRole = (table: string, policy: string) =>
  `(SELECT r::text FROM pg_catalog.pg_policies, unnest(roles) r
     WHERE schemaname = 'once' AND tablename = '${table}' AND policyname = '${policy}' LIMIT 1)`;

/**
 * Columns app, relay, maintenance read from the policies: for a SELECT of its own, or to ride on
 * another statement (withTenant's first statement, the operator role check).
 */
export const INSTALLED_ROLE_COLUMNS = `
  ${policyRole('idempotency_keys', 'tenant_isolation')} AS app,
  ${policyRole('outbox_events', 'relay_reads')} AS relay,
  ${policyRole('idempotency_keys', 'maintenance_reads_metadata')} AS maintenance`;
