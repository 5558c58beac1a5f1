/**
 * Who may call what: the one role check that every operator function (src/ops/), the dashboard
 * and the relay run before anything else. Without it, forced row-level security makes an
 * across-tenants query by the wrong role silently find nothing (a status of zeros, an empty list
 * of dead events), and a missing grant surfaces as a bare "permission denied".
 *
 * Each refusal is a WrongRoleError (WRONG_ROLE) naming the role needed, except migrate's: a
 * migrate that cannot run has answered MIGRATION_FAILED since 0.1, so its refusal keeps that code
 * and carries the WrongRoleError as its `cause`.
 */
import { MigrationFailedError, NotInstalledError, WrongRoleError } from '../errors.ts';
import { INSTALLED_ROLE_COLUMNS } from '../internal/role-names.ts';
import type { Session } from '../internal/session.ts';

/**
 * - relay: across-tenants work, the database's relay role (it reads every tenant's outbox and
 *   audit rows, never a result), or a role that bypasses row-level security;
 * - schema-owner: operator tables (rate limits), the owner of schema `once` (whoever migrated);
 * - migrating-owner: creating and altering pg-once's schema: CREATE on the database, and on
 *   schema `once` once it is installed (its owner has it);
 * - any-login: reads only catalogs and what the login may see, and reports the rest as unknown.
 */
type NeededRole = 'relay' | 'schema-owner' | 'migrating-owner' | 'any-login';

/** Each operator function, by the name its refusal gives it (the CLI command where there is one). */
const NEEDED_ROLE = {
  migrate: 'migrating-owner',
  sweep: 'relay',
  status: 'relay',
  'outbox dead': 'relay',
  'outbox requeue': 'relay',
  'limits set': 'schema-owner',
  'limits remove': 'schema-owner',
  'limits list': 'schema-owner',
  doctor: 'any-login',
  'the dashboard': 'relay',
  'the relay': 'relay',
  drainOnce: 'relay',
} as const satisfies Record<string, NeededRole>;

export type OperatorFunction = keyof typeof NEEDED_ROLE;

/** Refuses, before anything is read or written, a login that may not run `operation`. */
export async function assertOperatorRole(session: Session, operation: OperatorFunction): Promise<void> {
  const needed: NeededRole = NEEDED_ROLE[operation];
  if (needed === 'any-login') return;
  if (needed === 'migrating-owner') return assertMayMigrate(session);
  const facts = await roleFacts(session);
  if (facts.bypass) return;
  if (needed === 'relay' && !facts.in_relay) {
    throw new WrongRoleError(
      `pg-once: ${operation} must run as a login granted ${facts.relay}, this database's relay role: role "${facts.role}" is not ` +
        `(as the application role it would see one tenant at most). GRANT ${facts.relay} TO ${facts.role}; or connect as the relay's login.`,
      { neededRole: facts.relay },
    );
  }
  if (needed === 'schema-owner' && !facts.owns_schema) {
    throw new WrongRoleError(
      `pg-once: ${operation} must run as the owner of schema once (${facts.schema_owner}, the role that ran pg-once migrate): role "${facts.role}" is not.`,
      { neededRole: facts.schema_owner ?? undefined },
    );
  }
}

interface RoleFacts {
  role: string;
  bypass: boolean;
  relay: string;
  in_relay: boolean;
  schema_owner: string | null;
  owns_schema: boolean;
}

async function roleFacts(session: Session): Promise<RoleFacts> {
  const { rows } = await session.query<Omit<RoleFacts, 'relay'> & { relay: string | null }>(`
    SELECT current_user AS role,
           coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) AS bypass,
           names.relay,
           names.relay IS NOT NULL AND pg_catalog.pg_has_role(current_user, names.relay, 'MEMBER') AS in_relay,
           pg_catalog.pg_get_userbyid(n.nspowner) AS schema_owner,
           coalesce(pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE'), false) AS owns_schema
      FROM (SELECT ${INSTALLED_ROLE_COLUMNS}) names
      LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = 'once'`);
  const facts = rows[0]!;
  if (facts.relay === null) {
    throw new NotInstalledError("pg-once: this database has no pg-once schema (or one older than 0.2's roles): run `pg-once migrate`.");
  }
  return { ...facts, relay: facts.relay };
}

/**
 * Only what is certain to fail is refused here, and only where migrate failed with
 * MIGRATION_FAILED before this check existed: CREATE SCHEMA IF NOT EXISTS needs CREATE on the
 * database even when the schema exists, and CREATE TABLE IF NOT EXISTS once.migrations needs
 * CREATE on the schema. A schema `once` without once.migrations is left to the migration, which
 * refuses it as not pg-once's (INSTALLATION_UNSAFE). From catalogs only: to_regclass('once.…')
 * would itself fail for a login without USAGE on the schema.
 */
async function assertMayMigrate(session: Session): Promise<void> {
  const { rows } = await session.query<{
    role: string;
    database: string;
    database_owner: string;
    create_in_database: boolean;
    installed: boolean;
    schema_owner: string | null;
    create_in_schema: boolean;
  }>(`
    SELECT current_user AS role, d.datname AS database, pg_catalog.pg_get_userbyid(d.datdba) AS database_owner,
           pg_catalog.has_database_privilege(d.oid, 'CREATE') AS create_in_database,
           EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'migrations') AS installed,
           pg_catalog.pg_get_userbyid(n.nspowner) AS schema_owner,
           coalesce(pg_catalog.has_schema_privilege(n.oid, 'CREATE'), false) AS create_in_schema
      FROM pg_catalog.pg_database d
      LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = 'once'
     WHERE d.datname = current_database()`);
  const facts = rows[0]!;
  const schemaExists = facts.schema_owner !== null;
  let refusal: { message: string; neededRole: string } | undefined;
  if (facts.installed && !facts.create_in_schema) {
    refusal = {
      message: `pg-once: migrate must run as the owner of schema once (${facts.schema_owner}, the role that ran pg-once migrate): role "${facts.role}" is not`,
      neededRole: facts.schema_owner!,
    };
  } else if ((!schemaExists || facts.installed) && !facts.create_in_database) {
    refusal = {
      message:
        `pg-once: migrate must run as the owner of database ${facts.database} (${facts.database_owner}), or a role with CREATE on it: ` +
        `role "${facts.role}" may not create a schema there`,
      neededRole: facts.database_owner,
    };
  }
  if (refusal) {
    const cause = new WrongRoleError(`${refusal.message}.`, { neededRole: refusal.neededRole });
    throw new MigrationFailedError(`${refusal.message}; nothing was applied.`, { cause });
  }
}
