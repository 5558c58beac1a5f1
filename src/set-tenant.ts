/**
 * The first statement of every withTenant transaction: sets the tenant for row-level security
 * and the idle timeout, and, on a database handle's first accepted transaction, learns what its
 * role is (see RoleCheck), riding on the same statement so that it costs no round trip.
 */
import { NotInstalledError, RlsBypassError, WrongRoleError } from './errors.ts';
import { INSTALLED_ROLE_COLUMNS } from './internal/role-names.ts';
import type { Statement } from './internal/inline-values.ts';
import type { TransactionClient } from './internal/transaction-client.ts';

/**
 * What each database handle's role is, learned on its first accepted withTenant: whether it bypasses RLS,
 * and whether it holds this database's application role (without it every pg-once statement
 * fails with a bare "permission denied"). Keyed by handle (a Kysely instance, a pg Pool, a Knex,
 * ...), since a handle is one pool and one role.
 */
interface RoleCheck {
  role: string;
  bypass: boolean;
  /** This database's application role, or null when pg-once is not installed here. */
  appRole: string | null;
  member: boolean;
  /** Whether the schema has what this version of pg-once calls (migrate applied its files). */
  current: boolean;
}

/**
 * The newest function and column this package uses (sql/0015's once.record_audit, which the
 * claim and the client's audit rows call; sql/0009), and sql/0013's grant as the mark of a schema
 * whose claim_key lets duplicates wait on a shared lock: their absence means the database's schema
 * is older than the code, which would otherwise fail at the claim or an audit row with a bare
 * "function does not exist", or at enqueue with "column does not exist", or wait for duplicates
 * one after another. Read from the catalog, which every login may read.
 */
const NEWEST_FUNCTION = 'record_audit';
// By name through the catalog, not to_regclass('once....'), which needs USAGE on the schema: a
// login without the app role must get WRONG_ROLE, not "permission denied for schema once".
const NEWEST_COLUMN = { table: 'outbox_events', column: 'payload_text' };
/** sql/0013 grants it to the application role (made for reserved outbox ids, a step later taken back; still 0013's mark). */
const NEWEST_GRANT = { sequence: 'outbox_events_id_seq' };
const roleByInstance = new WeakMap<object, RoleCheck>();

/** Refuses at once, before any round trip, a handle whose role was refused before. */
export function refuseKnownRole(db: object, allowRlsBypass: boolean): void {
  const known = roleByInstance.get(db);
  if (known) refuseRole(known, allowRlsBypass);
}

/**
 * The transaction's idle-in-transaction timeout, lowered to `idleMs` ($2, and $3 as text) unless
 * the session's is lower already (0, disabled, counts as higher). Part of the tenant's statement,
 * so it costs no round trip. SHOW's units (ms, s, min, h, d) all read as intervals.
 */
const IDLE_TIMEOUT = `set_config('idle_in_transaction_session_timeout',
               CASE WHEN current_setting('idle_in_transaction_session_timeout')::interval
                         BETWEEN interval '1 millisecond' AND $2 * interval '1 millisecond'
                    THEN current_setting('idle_in_transaction_session_timeout')
                    ELSE $3 END, true)`;

const SET_TENANT = {
  plain: `SELECT set_config('once.tenant_id', $1, true), ${IDLE_TIMEOUT}`,
  noIdle: `SELECT set_config('once.tenant_id', $1, true), NULL`,
};

const SET_TENANT_AND_CHECK = (idle: string) => `
    SELECT set_config('once.tenant_id', $1, true) AS tenant, ${idle} AS idle, current_user AS role,
           (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user) AS bypass,
           names.app, pg_has_role(current_user, names.app, 'MEMBER') AS member,
           EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'once' AND p.proname = '${NEWEST_FUNCTION}')
           AND EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'once' AND c.relname = '${NEWEST_COLUMN.table}' AND a.attname = '${NEWEST_COLUMN.column}'
                          AND NOT a.attisdropped)
           AND EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) g
                        WHERE n.nspname = 'once' AND c.relname = '${NEWEST_GRANT.sequence}' AND g.privilege_type = 'USAGE'
                          AND g.grantee = (SELECT r.oid FROM pg_roles r WHERE r.rolname = names.app)) AS current
      FROM (SELECT ${INSTALLED_ROLE_COLUMNS}) names`;
const CHECK = { plain: SET_TENANT_AND_CHECK(IDLE_TIMEOUT), noIdle: SET_TENANT_AND_CHECK('NULL') };

/**
 * The tenant's statement alone, once the handle's role is known (its rows are then not read), so
 * that a driver may send it in the round trip of BEGIN (Driver.transactionOpenedWith); undefined
 * while the role is still to be learned, by setTenant's first statement.
 */
export function knownTenantStatement(db: object, tenantId: string, idleMs: number): Statement | undefined {
  return roleByInstance.has(db) ? tenantStatement(SET_TENANT, tenantId, idleMs) : undefined;
}

/** The variant of `texts` for `idleMs` (0: no idle-session timeout) with its values. */
function tenantStatement(texts: { plain: string; noIdle: string }, tenantId: string, idleMs: number): Statement {
  return idleMs === 0 ? { text: texts.noIdle, values: [tenantId] } : { text: texts.plain, values: [tenantId, idleMs, String(idleMs)] };
}

export async function setTenant(db: object, tx: TransactionClient, tenantId: string, allowRlsBypass: boolean, idleMs: number): Promise<void> {
  const known = knownTenantStatement(db, tenantId, idleMs);
  if (known) {
    await tx.query(known.text, known.values);
    return;
  }
  const statement = tenantStatement(CHECK, tenantId, idleMs);
  const rows = await tx.query<{ role: string; bypass: boolean; app: string | null; member: boolean | null; current: boolean }>(
    statement.text,
    statement.values,
  );
  const row = rows[0];
  const check: RoleCheck = {
    role: row?.role ?? 'unknown',
    bypass: row?.bypass === true,
    appRole: row?.app ?? null,
    member: row?.member === true,
    current: row?.current === true,
  };
  // A refusal is not remembered (the next call checks again): a GRANT or a migrate fixes it while
  // the application runs, and a remembered one would last until a restart. Bypassing RLS is a
  // role attribute that does not come and go, and whether it is refused depends on each call.
  if (check.bypass) roleByInstance.set(db, check);
  refuseRole(check, allowRlsBypass);
  roleByInstance.set(db, check);
}

function refuseRole(check: RoleCheck, allowRlsBypass: boolean): void {
  if (check.appRole !== null && !check.current) {
    throw new NotInstalledError(
      "pg-once: this database's pg-once schema is older than this package: run `pg-once migrate` (as the database's owner) before deploying it.",
    );
  }
  if (check.bypass) {
    if (!allowRlsBypass) throw new RlsBypassError(check.role);
    return;
  }
  if (check.appRole === null) {
    throw new NotInstalledError("pg-once: this database has no pg-once schema: run `pg-once migrate` (as the database's owner).");
  }
  if (!check.member) {
    throw new WrongRoleError(
      `pg-once: role "${check.role}" is not granted ${check.appRole}, this database's application role, so it may not ` +
        `use pg-once here. GRANT ${check.appRole} TO ${check.role};`,
      { neededRole: check.appRole },
    );
  }
}
