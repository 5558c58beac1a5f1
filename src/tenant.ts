/**
 * withTenant: the transaction every pg-once call runs in. READ COMMITTED (the claim's wait-then-
 * read relies on each statement seeing newly committed rows), with `once.tenant_id` set for this
 * transaction only (`set_config(..., true)`), so a pooled connection never carries one tenant's
 * id into another's work.
 */
import type { Kysely, Transaction } from 'kysely';
import { sql } from 'kysely';
import { CallAbortedError, InvalidTenantError, NotInstalledError, PoolerSettingError, RlsBypassError, translateDatabaseError, WrongRoleError } from './errors.ts';
import { isRecordedIn } from './idempotency/recorded-failure.ts';
import { setTransactionState, type TransactionState } from './idempotency/transaction-state.ts';
import { INSTALLED_ROLE_COLUMNS } from './internal/role-names.ts';
import { textProblem } from './internal/safe-text.ts';
import { parseOptions, type WithTenantOptions, withTenantOptionsSchema } from './options.ts';
import { settings } from './settings.ts';

/** Longest tenant id accepted, in characters. */
export const MAX_TENANT_ID_LENGTH = 128;

export function assertValidTenantId(tenantId: unknown): asserts tenantId is string {
  if (typeof tenantId !== 'string' || tenantId.length === 0 || tenantId.length > MAX_TENANT_ID_LENGTH) {
    throw new InvalidTenantError(
      `pg-once: a tenant id must be a non-empty string of at most ${MAX_TENANT_ID_LENGTH} characters` +
        (typeof tenantId === 'string' ? ` (got ${tenantId.length} characters).` : ` (got ${typeof tenantId}).`),
    );
  }
  const problem = textProblem(tenantId);
  if (problem) throw new InvalidTenantError(`pg-once: a tenant id ${problem}.`);
}

/**
 * What each Kysely instance's role is, learned on its first accepted withTenant: whether it bypasses RLS,
 * and whether it holds this database's application role (without it every pg-once statement
 * fails with a bare "permission denied"). Keyed by instance, since an instance is one pool and one
 * role. The check rides on the set_config statement, so it costs no round trip of its own.
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
 * The newest function and column this package uses (sql/0007, sql/0009): their absence means the
 * database's schema is older than the code, which would otherwise fail at the claim with a bare
 * "function does not exist" or at enqueue with "column does not exist". Read from the catalog,
 * which every login may read.
 */
const NEWEST_FUNCTION = 'claim_key';
// By name through the catalog, not to_regclass('once....'), which needs USAGE on the schema: a
// login without the app role must get WRONG_ROLE, not "permission denied for schema once".
const NEWEST_COLUMN = { table: 'outbox_events', column: 'payload_text' };
const roleByInstance = new WeakMap<Kysely<any>, RoleCheck>();

export async function withTenant<DB, T>(
  db: Kysely<DB>,
  tenantId: string,
  fn: (tx: Transaction<DB>) => Promise<T>,
  options?: WithTenantOptions,
): Promise<T> {
  assertValidTenantId(tenantId);
  const parsed = options === undefined ? undefined : parseOptions(withTenantOptionsSchema, options, 'withTenant options');
  const allowRlsBypass = parsed?.allowRlsBypass ?? settings().allowRlsBypass ?? false;
  const idleMs = parsed?.idleInTransactionTimeoutMs ?? IDLE_IN_TRANSACTION_TIMEOUT_MILLISECONDS;
  const requestedAt = performance.now();
  let state: TransactionState | undefined;

  const known = roleByInstance.get(db);
  if (known) refuseRole(known, allowRlsBypass);

  // A recorded failure (see recorded-failure.ts) must commit before it propagates; Kysely rolls
  // back when the callback throws, so it is carried out of the callback instead.
  let recorded: { error: unknown } | undefined;
  try {
    const result = await db
      .transaction()
      .setIsolationLevel('read committed')
      .execute(async (tx) => {
        state = { db, tenantId, poolWaitMs: performance.now() - requestedAt };
        setTransactionState(tx, state);
        await setTenant(db, tx, tenantId, allowRlsBypass, idleMs);
        try {
          return await fn(tx);
        } catch (error) {
          if (!isRecordedIn(tx, error)) throw error;
          recorded = { error };
          return undefined as T;
        }
      });
    if (recorded) throw recorded.error;
    return result;
  } catch (error) {
    throw translateTransactionError(error, state);
  }
}

/** The default of `idleInTransactionTimeoutMs`: one minute. */
export const IDLE_IN_TRANSACTION_TIMEOUT_MILLISECONDS = 60 * 1_000;

/** SQLSTATE in_failed_sql_transaction: a statement in a transaction that is already aborted. */
const IN_FAILED_TRANSACTION = '25P02';
/**
 * SQLSTATE protocol_violation: what PgBouncer in pool_mode = statement answers to BEGIN ("transaction
 * blocks not allowed in statement pooling mode"). A driver that speaks to Postgres itself never
 * meets it in a transaction.
 */
const PROTOCOL_VIOLATION = '08P01';

/**
 * An idempotent call that failed aborts its transaction on purpose (once.abort_call). Code that
 * caught its error and went on sees that as a raw 25P02 on its next statement, or, when it
 * swallowed the error and returned, as Kysely's AbortedTransactionError at COMMIT (Postgres rolls
 * back instead): both are CALL_ABORTED, with the call's own error as the cause.
 */
function translateTransactionError(error: unknown, state: TransactionState | undefined): unknown {
  if (state?.abortedBy && (isKyselyAbortedTransaction(error) || (error as { code?: unknown } | null)?.code === IN_FAILED_TRANSACTION)) {
    return new CallAbortedError(
      'pg-once: an idempotent call failed in this transaction, which it aborted on purpose so that nothing of the call ' +
        'could commit; nothing of the transaction committed. Let the error propagate, or retry the whole transaction.',
      { cause: state.abortedBy.error },
    );
  }
  if ((error as { code?: unknown } | null)?.code === PROTOCOL_VIOLATION) {
    return new PoolerSettingError(
      `pg-once: the connection refused withTenant's transaction (${(error as Error).message}). pg-once needs transactions ` +
        "of several statements: behind PgBouncer, use pool_mode = transaction or session, not statement.",
      { cause: error },
    );
  }
  return translateDatabaseError(error);
}

/** Kysely 0.28+ marks its AbortedTransactionError with this registered symbol (0.27 has none). */
function isKyselyAbortedTransaction(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[Symbol.for('kysely.AbortedTransactionError')] === true;
}

/**
 * The transaction's idle-in-transaction timeout, lowered to `idleMs` unless the session's is lower
 * already (0, disabled, counts as higher). Part of the tenant's statement, so it costs no round
 * trip. SHOW's units (ms, s, min, h, d) all read as intervals.
 */
function idleTimeout(idleMs: number) {
  if (idleMs === 0) return sql`NULL`;
  return sql`set_config('idle_in_transaction_session_timeout',
               CASE WHEN current_setting('idle_in_transaction_session_timeout')::interval
                         BETWEEN interval '1 millisecond' AND ${idleMs} * interval '1 millisecond'
                    THEN current_setting('idle_in_transaction_session_timeout')
                    ELSE ${String(idleMs)} END, true)`;
}

async function setTenant(db: Kysely<any>, tx: Transaction<any>, tenantId: string, allowRlsBypass: boolean, idleMs: number): Promise<void> {
  if (roleByInstance.has(db)) {
    await sql`SELECT set_config('once.tenant_id', ${tenantId}, true), ${idleTimeout(idleMs)}`.execute(tx);
    return;
  }
  const { rows } = await sql<{ role: string; bypass: boolean; app: string | null; member: boolean | null; current: boolean }>`
    SELECT set_config('once.tenant_id', ${tenantId}, true) AS tenant, ${idleTimeout(idleMs)} AS idle, current_user AS role,
           (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user) AS bypass,
           names.app, pg_has_role(current_user, names.app, 'MEMBER') AS member,
           EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'once' AND p.proname = ${NEWEST_FUNCTION})
           AND EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'once' AND c.relname = ${NEWEST_COLUMN.table} AND a.attname = ${NEWEST_COLUMN.column}
                          AND NOT a.attisdropped) AS current
      FROM (SELECT ${sql.raw(INSTALLED_ROLE_COLUMNS)}) names`.execute(tx);
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
