/**
 * What is installed in the database: pg-once's schema, its pending migrations, the objects
 * `checkInstallation` compares with what pg-once created (row-level security, policies, PUBLIC
 * grants, owners), who may connect, and whether its roles also serve other databases.
 */
import { MigrationError } from '../../errors.ts';
import { quoteIdentifier } from '../../internal/bind-variables.ts';
import { checkInstallation, rolesServingOtherDatabases } from '../migrate/check-installation.ts';
import { assertRecordedShipped, migrationFiles, type RecordedMigration, unappliedFiles } from '../migrate/migration-files.ts';
import { isLegacyRoles, type RoleNames } from '../../internal/role-names.ts';
import type { Session } from '../../internal/session.ts';
import { tableAccess } from '../../internal/table-access.ts';
import type { DatabaseFacts } from './database-facts.ts';
import { type DoctorFinding, finding } from './finding.ts';

/** Databases named in a finding before "and N more". */
const LISTED_DATABASES = 5;

export function installedFinding(facts: DatabaseFacts): DoctorFinding {
  if (facts.schemaOwner === null) {
    return finding('installed', 'fail', `pg-once is not installed in database ${facts.database} (no schema once)`, 'pg-once migrate  (as the database owner)');
  }
  if (!facts.roles) {
    return finding(
      'installed',
      'fail',
      `schema once exists in ${facts.database} but holds none of pg-once's policies: it was not installed by pg-once, or not completely`,
      'pg-once migrate  (it installs into an empty schema once, and refuses a foreign one)',
    );
  }
  return finding(
    'installed',
    'ok',
    `pg-once is installed in ${facts.database}, owned by ${facts.schemaOwner}; roles ${facts.roles.app}, ${facts.roles.relay}, ${facts.roles.maintenance}`,
  );
}

/**
 * once.migrations is readable by its owner only (no grant to anyone): other logins learn only
 * what the catalogs show, i.e. whether the database still runs on 0.1's cluster-wide roles,
 * which means 0005 at least is pending.
 */
export async function migrationFindings(session: Session, facts: DatabaseFacts): Promise<DoctorFinding> {
  const legacy = facts.roles !== undefined && isLegacyRoles(facts.roles);
  const onLegacyRoles = 'this database still uses the cluster-wide roles of pg-once 0.1 (a login granted once_app for any database opens this one)';
  const access = await tableAccess(session, 'once', 'migrations');
  if (access === 'missing') {
    return finding(
      'migrations',
      'fail',
      'once.migrations is missing: pg-once cannot tell what was applied',
      'restore the database, or drop schema once and run pg-once migrate',
    );
  }
  if (access === 'denied') {
    return legacy
      ? finding('migrations', 'fail', `migration 0005 at least is pending: ${onLegacyRoles}`, `pg-once migrate  (as ${facts.schemaOwner})`)
      : finding(
          'migrations',
          'unknown',
          `pending migrations not checked: only ${facts.schemaOwner}, the owner of schema once, and the relay role may read once.migrations`,
          `run pg-once doctor as ${facts.schemaOwner} or the relay's login`,
        );
  }
  const { rows: recorded } = await session.query<RecordedMigration>('SELECT version, name, checksum FROM once.migrations ORDER BY version');
  const shipped = await migrationFiles();
  try {
    assertRecordedShipped(shipped, recorded);
  } catch (error) {
    if (!(error instanceof MigrationError)) throw error;
    return finding(
      'migrations',
      'fail',
      error.message.replace(/^pg-once: /, ''),
      'install the pg-once release that migrated this database, or restore the file as shipped',
    );
  }
  const pending = unappliedFiles(shipped, recorded);
  if (pending.length > 0) {
    const names = pending.map((file) => file.name).join(', ');
    return legacy
      ? finding('migrations', 'fail', `${pending.length} migration(s) pending (${names}): ${onLegacyRoles}`, 'pg-once migrate')
      : finding('migrations', 'warn', `${pending.length} migration(s) pending: ${names}`, 'pg-once migrate');
  }
  return finding('migrations', 'ok', `no migration pending (newest recorded: ${recorded.at(-1)?.name ?? 'none'})`);
}

/**
 * `checkInstallation` reads catalogs only (pg_namespace, pg_class, pg_attribute, pg_policies,
 * pg_proc), so it works for any login, even one without USAGE on schema once. Its expectations
 * are those of the per-database roles: a database still on 0.1's roles is reported by the
 * migrations finding instead.
 */
export async function installationFindings(session: Session, roles: RoleNames): Promise<DoctorFinding[]> {
  if (isLegacyRoles(roles)) {
    return [
      finding(
        'installation',
        'unknown',
        "policies and grants not checked: they are compared with pg-once's current ones, which this database gets from migration 0005",
        'pg-once migrate',
      ),
    ];
  }
  const problems = await checkInstallation(session, roles);
  if (problems.length === 0) {
    return [finding('installation', 'ok', "every table has row-level security with exactly pg-once's policies; nothing is granted to PUBLIC; one owner")];
  }
  return problems.map((problem) => finding('installation', 'fail', `${problem.object} ${problem.problem}`, problem.fix));
}

/**
 * PUBLIC's default CONNECT lets every login of the server open the database. Row-level security
 * still hides the rows from a login holding no pg-once role, but tables outside schema once, and
 * the catalogs, are not: only the logins that need the database should reach it.
 */
export async function connectFinding(session: Session, facts: DatabaseFacts): Promise<DoctorFinding> {
  const groups = facts.roles && !isLegacyRoles(facts.roles) ? [facts.roles.app, facts.roles.relay] : [];
  const { rows } = await session.query<{ public_connect: boolean; without_grant: string[] | null }>(
    `WITH acl AS (
       SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
        WHERE d.datname = current_database())
     SELECT EXISTS (SELECT 1 FROM acl WHERE grantee = 0 AND privilege_type = 'CONNECT') AS public_connect,
            (SELECT array_agg(g ORDER BY g) FROM unnest($1::text[]) g
              WHERE NOT EXISTS (SELECT 1 FROM acl JOIN pg_catalog.pg_roles r ON r.oid = acl.grantee
                                 WHERE r.rolname = g AND acl.privilege_type = 'CONNECT')) AS without_grant`,
    [groups],
  );
  const row = rows[0]!;
  const database = quoteIdentifier(facts.database);
  if (!row.public_connect) {
    return finding('connect', 'ok', `PUBLIC may not connect to ${facts.database}: only logins granted CONNECT (directly or through a role) may`);
  }
  const grant = row.without_grant?.length ? ` GRANT CONNECT ON DATABASE ${database} TO ${row.without_grant.map(quoteIdentifier).join(', ')};` : '';
  return finding(
    'connect',
    'warn',
    `PUBLIC may connect to ${facts.database}: every login of the server can open it and read what row-level security does not cover`,
    `REVOKE CONNECT ON DATABASE ${database} FROM PUBLIC;${grant}  -- and GRANT CONNECT to any other login that needs it`,
  );
}

/**
 * Roles are cluster-wide. A database cloned with CREATE DATABASE ... TEMPLATE, or migrated with a
 * reused --role-prefix, shares its roles with the other: a login granted them for one opens both.
 */
export async function sharedRolesFinding(session: Session, roles: RoleNames): Promise<DoctorFinding> {
  // 0.1's roles serve every database by design; the migrations finding already fails for that.
  if (isLegacyRoles(roles))
    return finding(
      'shared-roles',
      'unknown',
      'roles shared with other databases not checked: this database still uses the cluster-wide roles of 0.1',
      'pg-once migrate',
    );
  const rows = await rolesServingOtherDatabases(session, roles);
  if (rows.length === 0) return finding('shared-roles', 'ok', `${roles.app}, ${roles.relay} and ${roles.maintenance} serve this database only`);
  const databases = [...new Set(rows.map((row) => row.database))];
  const listed =
    databases.slice(0, LISTED_DATABASES).join(', ') + (databases.length > LISTED_DATABASES ? ` and ${databases.length - LISTED_DATABASES} more` : '');
  return finding(
    'shared-roles',
    'warn',
    `this database's roles also serve ${listed} (a clone made with CREATE DATABASE ... TEMPLATE, or a reused --role-prefix): a login granted them for one database opens the other`,
    "give one of them roles of its own: create an empty database, pg-once migrate --role-prefix <new prefix> there, copy the rows over (pg-once cannot rename an installed database's roles)",
  );
}
