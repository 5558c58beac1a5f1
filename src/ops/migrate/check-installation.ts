/**
 * What pg-once owns in a database, checked against what it installed: every table's row-level
 * security, exactly pg-once's policies (name, command, roles and expressions), no privilege
 * granted to PUBLIC, one owner for the schema and its objects. Row-level security is only as good
 * as its weakest policy: permissive policies are OR-ed, so a single extra `USING (true)` (or a
 * table left unforced for its owner) reopens every tenant's rows. `migrate` runs this on every
 * run, inside its transaction, and refuses to commit anything when it finds a problem; `doctor`
 * reports the same findings.
 */
import { RolesConflictError, type InstallationProblem, InstallationUnsafeError } from '../../errors.ts';
import type { RoleNames } from '../../internal/role-names.ts';
import type { Session } from '../../internal/session.ts';

type RoleKind = keyof RoleNames;
type Command = 'ALL' | 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE';

interface ExpectedPolicy {
  command: Command;
  role: RoleKind;
  /** As `pg_policies` deparses it: Postgres prints every expression fully parenthesised. */
  using: string | null;
  check: string | null;
}

const TENANT_ROW = '((once.current_tenant() IS NOT NULL) AND (tenant_id = once.current_tenant()))';
const TENANT_CHECK = '(tenant_id = once.current_tenant())';
const tenantIsolation: ExpectedPolicy = { command: 'ALL', role: 'app', using: TENANT_ROW, check: TENANT_CHECK };

interface ExpectedTable {
  /** FORCE ROW LEVEL SECURITY: the owner is filtered too. Not on the owner-managed limit tables. */
  forced: boolean;
  policies: Record<string, ExpectedPolicy>;
}

const EXPECTED_TABLES: Record<string, ExpectedTable> = {
  idempotency_keys: {
    forced: true,
    policies: {
      tenant_isolation: tenantIsolation,
      maintenance_reads_metadata: { command: 'SELECT', role: 'maintenance', using: 'true', check: null },
      maintenance_locks_expired: { command: 'UPDATE', role: 'maintenance', using: '(expires_at < now())', check: 'false' },
      maintenance_sweeps_expired: { command: 'DELETE', role: 'maintenance', using: '(expires_at < now())', check: null },
    },
  },
  outbox_events: {
    forced: true,
    policies: {
      tenant_isolation: tenantIsolation,
      relay_reads: { command: 'SELECT', role: 'relay', using: 'true', check: null },
      relay_updates: { command: 'UPDATE', role: 'relay', using: 'true', check: 'true' },
      relay_deletes_settled: { command: 'DELETE', role: 'relay', using: "(status <> 'pending'::text)", check: null },
    },
  },
  dedupe_audit: {
    forced: true,
    policies: {
      tenant_isolation: tenantIsolation,
      relay_reads: { command: 'SELECT', role: 'relay', using: 'true', check: null },
      relay_sweeps: { command: 'DELETE', role: 'relay', using: 'true', check: null },
    },
  },
  rate_limits: {
    forced: false,
    policies: {
      tenant_reads_own_and_default: {
        command: 'SELECT',
        role: 'app',
        using: "((once.current_tenant() IS NOT NULL) AND (tenant_id = ANY (ARRAY[once.current_tenant(), '*'::text])))",
        check: null,
      },
    },
  },
  rate_limit_state: { forced: false, policies: { tenant_isolation: tenantIsolation } },
};

/**
 * Bookkeeping (applied files, the roles' names, relays seen, sweeps run, operators' actions): no tenant rows, so no
 * row-level security.
 */
const BOOKKEEPING_TABLES = new Set(['migrations', 'roles', 'relays', 'sweeps', 'operator_actions']);

export async function checkInstallation(session: Session, roles: RoleNames): Promise<InstallationProblem[]> {
  const problems: InstallationProblem[] = [];
  const { rows: schema } = await session.query<{ owner: string; public_grants: string[] | null }>(`
    SELECT pg_catalog.pg_get_userbyid(n.nspowner) AS owner,
           (SELECT array_agg(a.privilege_type) FROM aclexplode(n.nspacl) a WHERE a.grantee = 0) AS public_grants
      FROM pg_catalog.pg_namespace n WHERE n.nspname = 'once'`);
  const owner = schema[0]?.owner;
  if (owner === undefined) return [{ object: 'schema once', problem: 'does not exist', fix: 'pg-once migrate' }];
  if (schema[0]?.public_grants) {
    problems.push({
      object: 'schema once',
      problem: `PUBLIC holds ${schema[0].public_grants.join(', ')}`,
      fix: 'REVOKE ALL ON SCHEMA once FROM PUBLIC;',
    });
  }
  problems.push(...(await checkTables(session, owner)));
  problems.push(...(await checkPolicies(session, roles)));
  problems.push(...(await checkFunctions(session, roles, owner)));
  return problems;
}

async function checkTables(session: Session, owner: string): Promise<InstallationProblem[]> {
  const problems: InstallationProblem[] = [];
  const { rows } = await session.query<{
    name: string;
    kind: string;
    owner: string;
    rls: boolean;
    forced: boolean;
    public_grants: string[] | null;
  }>(`
    SELECT c.relname AS name, c.relkind::text AS kind, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
           c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
           (SELECT array_agg(DISTINCT g.privilege_type ORDER BY g.privilege_type) FROM (
              SELECT a.privilege_type, a.grantee FROM aclexplode(c.relacl) a
              UNION ALL
              SELECT a.privilege_type, a.grantee FROM pg_catalog.pg_attribute att, aclexplode(att.attacl) a
               WHERE att.attrelid = c.oid) g WHERE g.grantee = 0) AS public_grants
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'once' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
     ORDER BY 1`);
  const seen = new Set<string>();
  for (const row of rows) {
    const object = `once.${row.name}`;
    seen.add(row.name);
    if (row.owner !== owner) {
      problems.push({ object, problem: `owned by ${row.owner}, not by the schema's owner ${owner}`, fix: `ALTER TABLE ${object} OWNER TO ${owner};` });
    }
    if (row.public_grants) {
      problems.push({ object, problem: `PUBLIC holds ${row.public_grants.join(', ')}`, fix: `REVOKE ALL ON ${object} FROM PUBLIC;` });
    }
    const expected = EXPECTED_TABLES[row.name];
    if (!expected) {
      // Sequences behind identity columns belong to their table; anything else is not ours.
      if (!BOOKKEEPING_TABLES.has(row.name) && row.kind !== 'S') {
        problems.push({ object, problem: 'is not a pg-once object', fix: `move it out of schema once (ALTER TABLE ${object} SET SCHEMA public;)` });
      }
      continue;
    }
    if (!row.rls) {
      problems.push({ object, problem: 'row-level security is disabled', fix: `ALTER TABLE ${object} ENABLE ROW LEVEL SECURITY;` });
    }
    if (expected.forced && !row.forced) {
      problems.push({
        object,
        problem: 'row-level security is not forced (its owner sees every tenant)',
        fix: `ALTER TABLE ${object} FORCE ROW LEVEL SECURITY;`,
      });
    }
  }
  for (const name of Object.keys(EXPECTED_TABLES)) {
    if (!seen.has(name))
      problems.push({ object: `once.${name}`, problem: 'is missing', fix: 'restore the database, or drop schema once and run pg-once migrate' });
  }
  return problems;
}

async function checkPolicies(session: Session, roles: RoleNames): Promise<InstallationProblem[]> {
  const problems: InstallationProblem[] = [];
  const { rows } = await session.query<{
    table: string;
    name: string;
    permissive: string;
    roles: string[];
    command: Command;
    using: string | null;
    check: string | null;
  }>(`
    SELECT tablename AS table, policyname AS name, permissive, roles::text[] AS roles, cmd AS command,
           qual AS using, with_check AS check
      FROM pg_catalog.pg_policies WHERE schemaname = 'once' ORDER BY 1, 2`);
  const present = new Set<string>();
  for (const row of rows) {
    const object = `policy ${row.name} on once.${row.table}`;
    present.add(`${row.table}.${row.name}`);
    const expected = EXPECTED_TABLES[row.table]?.policies[row.name];
    if (!expected) {
      problems.push({
        object,
        problem: `was not created by pg-once (${row.permissive.toLowerCase()} ${row.command} to ${row.roles.join(', ')} using ${row.using ?? '-'})`,
        fix: `DROP POLICY ${row.name} ON once.${row.table};`,
      });
      continue;
    }
    const differences: string[] = [];
    if (row.permissive !== 'PERMISSIVE') differences.push(`is ${row.permissive.toLowerCase()}`);
    if (row.command !== expected.command) differences.push(`applies to ${row.command}, not ${expected.command}`);
    if (row.roles.length !== 1 || row.roles[0] !== roles[expected.role]) differences.push(`applies to ${row.roles.join(', ')}, not ${roles[expected.role]}`);
    if (row.using !== expected.using) differences.push(`USING ${row.using ?? '(none)'}, not ${expected.using ?? '(none)'}`);
    if (row.check !== expected.check) differences.push(`WITH CHECK ${row.check ?? '(none)'}, not ${expected.check ?? '(none)'}`);
    if (differences.length > 0) {
      problems.push({
        object,
        problem: `was altered: ${differences.join('; ')}`,
        fix: `DROP POLICY ${row.name} ON once.${row.table}; then restore it as sql/baseline creates it`,
      });
    }
  }
  for (const [table, spec] of Object.entries(EXPECTED_TABLES)) {
    for (const name of Object.keys(spec.policies)) {
      if (!present.has(`${table}.${name}`)) {
        problems.push({ object: `policy ${name} on once.${table}`, problem: 'is missing', fix: 'restore it as sql/baseline creates it' });
      }
    }
  }
  return problems;
}

async function checkFunctions(session: Session, roles: RoleNames, owner: string): Promise<InstallationProblem[]> {
  const { rows } = await session.query<{ name: string; owner: string; definer: boolean; public_execute: boolean }>(`
    SELECT p.oid::regprocedure::text AS name, pg_catalog.pg_get_userbyid(p.proowner) AS owner, p.prosecdef AS definer,
           p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS public_execute
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'once' ORDER BY 1`);
  const problems: InstallationProblem[] = [];
  for (const row of rows) {
    const object = `function ${row.name}`;
    // SECURITY DEFINER functions run with their owner's rights: only the maintenance role's two.
    const expectedOwner = row.definer ? roles.maintenance : owner;
    if (row.owner !== expectedOwner) {
      problems.push({ object, problem: `owned by ${row.owner}, not ${expectedOwner}`, fix: `ALTER FUNCTION ${row.name} OWNER TO ${expectedOwner};` });
    }
    if (row.public_execute) {
      problems.push({ object, problem: 'PUBLIC may execute it', fix: `REVOKE ALL ON FUNCTION ${row.name} FROM PUBLIC;` });
    }
  }
  return problems;
}

/**
 * Before pg-once creates schema `once` in an empty database: a schema of that name that holds
 * anything, or that another role owns, was not made by pg-once, and adopting it would adopt
 * whatever policies and grants it carries.
 */
export async function refuseForeignSchema(session: Session): Promise<void> {
  const { rows } = await session.query<{ owner: string; mine: boolean; objects: number }>(`
    SELECT pg_catalog.pg_get_userbyid(n.nspowner) AS owner,
           pg_catalog.pg_has_role(n.nspowner, 'USAGE') AS mine,
           (SELECT count(*)::integer FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid)
           + (SELECT count(*)::integer FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid) AS objects
      FROM pg_catalog.pg_namespace n WHERE n.nspname = 'once'`);
  const schema = rows[0];
  if (!schema) return;
  const problems: InstallationProblem[] = [];
  if (!schema.mine) {
    problems.push({ object: 'schema once', problem: `exists and is owned by ${schema.owner}, not by you`, fix: 'DROP SCHEMA once; (or migrate as its owner)' });
  }
  if (schema.objects > 0) {
    problems.push({
      object: 'schema once',
      problem: `exists with ${schema.objects} object(s) but no once.migrations: it was not installed by pg-once`,
      fix: 'rename or drop it: ALTER SCHEMA once RENAME TO once_old;',
    });
  }
  if (problems.length > 0) throw new InstallationUnsafeError(problems);
}

/**
 * Roles about to be created or adopted must not already hold anything in another database of the
 * server (`pg_shdepend` is the one catalog that sees across databases): sharing them would let a
 * login of one database into the other.
 */
export async function checkForeignRoleUse(session: Session, roles: RoleNames): Promise<void> {
  const rows = await rolesServingOtherDatabases(session, roles);
  if (rows.length > 0) {
    throw new RolesConflictError(
      `pg-once: ${rows.map((row) => `role ${row.role} already serves database ${row.database}`).join('; ')}. ` +
        'Roles belong to one database: give this one its own with --role-prefix (migrate({ rolePrefix })).',
    );
  }
}

/**
 * Each (role, database) pair where one of these roles holds a privilege, owns an object or is
 * named by a policy in a database other than the current one. Any login may ask: `pg_shdepend`
 * is readable by all.
 */
export async function rolesServingOtherDatabases(session: Session, roles: RoleNames): Promise<{ role: string; database: string }[]> {
  const { rows } = await session.query<{ role: string; database: string }>(
    `SELECT DISTINCT r.rolname AS role, d.datname AS database
       FROM pg_catalog.pg_shdepend s
       JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid AND s.refclassid = 'pg_catalog.pg_authid'::regclass
       -- A database's own ACL (CONNECT) is a shared object's: dbid 0, objid the database.
       JOIN pg_catalog.pg_database d
         ON d.oid = CASE WHEN s.dbid = 0 AND s.classid = 'pg_catalog.pg_database'::regclass THEN s.objid ELSE s.dbid END
      WHERE r.rolname = ANY ($1::text[]) AND d.datname <> current_database()
      ORDER BY 1, 2`,
    [[roles.app, roles.relay, roles.maintenance]],
  );
  return rows;
}
