/**
 * withTenant: the transaction every pg-once call runs in. READ COMMITTED (the claim's wait-then-
 * read relies on each statement seeing newly committed rows), with `once.tenant_id` set for this
 * transaction only (`set_config(..., true)`), so a pooled connection never carries one tenant's
 * id into another's work.
 */
import type { Kysely, Transaction } from 'kysely';
import { kyselyDriver } from './drivers/kysely-driver.ts';
import { CallAbortedError, InvalidTenantError, PoolerSettingError, translateDatabaseError } from './errors.ts';
import { isRecordedIn } from './idempotency/recorded-failure.ts';
import { recordRejection } from './idempotency/rejection-audit.ts';
import { clearTransactionState, setTransactionState, type TransactionState } from './idempotency/transaction-state.ts';
import type { Driver } from './internal/driver.ts';
import { textProblem } from './internal/safe-text.ts';
import { parseOptions } from './options.ts';
import { type WithTenantOptions, withTenantOptionsSchema } from './with-tenant-options.ts';
import { knownTenantStatement, refuseKnownRole, setTenant } from './set-tenant.ts';
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

/** withTenant for one database library (see src/drivers/): `db` is its handle, `fn` gets its transaction. */
export async function withTenantFor<Db extends object, Tx extends object, T>(
  driver: Driver<Db, Tx>,
  db: Db,
  tenantId: string,
  fn: (tx: Tx) => Promise<T>,
  options?: WithTenantOptions,
): Promise<T> {
  assertValidTenantId(tenantId);
  const parsed = options === undefined ? undefined : parseOptions(withTenantOptionsSchema, options, 'withTenant options');
  const allowRlsBypass = parsed?.allowRlsBypass ?? settings().allowRlsBypass ?? false;
  const idleMs = parsed?.idleInTransactionTimeoutMs ?? IDLE_IN_TRANSACTION_TIMEOUT_MILLISECONDS;
  const requestedAt = performance.now();
  let state: TransactionState | undefined;
  refuseKnownRole(db, allowRlsBypass);

  // A recorded failure (see recorded-failure.ts) must commit before it propagates; every library
  // rolls back when the callback throws, so it is carried out of the callback instead.
  let recorded: { error: unknown } | undefined;
  // Once the handle's role is known, the tenant's statement can travel with BEGIN.
  const opening = driver.transactionOpenedWith && knownTenantStatement(db, tenantId, idleMs);
  try {
    const body = async (tx: Tx): Promise<T> => {
      const client = driver.client(tx)!;
      state = { db, tenantId, poolWaitMs: performance.now() - requestedAt };
      setTransactionState(tx, state);
      try {
        if (!opening) await setTenant(db, client, tenantId, allowRlsBypass, idleMs);
        let value: T;
        try {
          value = await fn(tx);
        } catch (error) {
          if (!isRecordedIn(tx, error)) throw error;
          recorded = { error };
          return undefined as T;
        }
        // fn swallowed the error of a call that aborted the transaction: Postgres answers its
        // COMMIT with a ROLLBACK, which only some libraries report (Kysely 0.28+); throwing here,
        // before the commit, makes that CALL_ABORTED with every library.
        if (state.abortedBy) throw abortedError(state.abortedBy.error);
        return value;
      } finally {
        // A pg PoolClient is the key of every transaction it runs (see transaction-state.ts).
        clearTransactionState(tx);
      }
    };
    const result = opening ? await driver.transactionOpenedWith!(db, opening, body) : await driver.transaction(db, body);
    if (recorded) throw recorded.error;
    return result;
  } catch (error) {
    const translated = translateTransactionError(error, state);
    await recordRejection(driver, db, translated, (client) => setTenant(db, client, tenantId, allowRlsBypass, idleMs));
    throw translated;
  }
}

export async function withTenant<DB, T>(db: Kysely<DB>, tenantId: string, fn: (tx: Transaction<DB>) => Promise<T>, options?: WithTenantOptions): Promise<T> {
  return withTenantFor(kyselyDriver as unknown as Driver<Kysely<DB>, Transaction<DB>>, db, tenantId, fn, options);
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
 * PgBouncer's refusal of a transaction in statement mode. Told by its message too: 08P01 is any
 * protocol violation, and only this one means "use another pool mode".
 */
function isStatementPoolingRefusal(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return code === PROTOCOL_VIOLATION && typeof message === 'string' && message.includes('pooling mode');
}

function abortedError(cause: unknown): CallAbortedError {
  return new CallAbortedError(
    'pg-once: an idempotent call failed in this transaction, which it aborted on purpose so that nothing of the call ' +
      'could commit; nothing of the transaction committed. Let the error propagate, or retry the whole transaction.',
    { cause },
  );
}

/**
 * An idempotent call that failed aborts its transaction on purpose (once.abort_call). Code that
 * caught its error and went on sees that as a raw 25P02 on its next statement, or, when it
 * swallowed the error and returned, as Kysely's AbortedTransactionError at COMMIT (Postgres rolls
 * back instead): both are CALL_ABORTED, with the call's own error as the cause.
 */
function translateTransactionError(error: unknown, state: TransactionState | undefined): unknown {
  if (error instanceof CallAbortedError) return error;
  if (state?.abortedBy && (isKyselyAbortedTransaction(error) || (error as { code?: unknown } | null)?.code === IN_FAILED_TRANSACTION)) {
    return abortedError(state.abortedBy.error);
  }
  if (isStatementPoolingRefusal(error)) {
    return new PoolerSettingError(
      `pg-once: the connection refused withTenant's transaction (${(error as Error).message}). pg-once needs transactions ` +
        'of several statements: behind PgBouncer, use pool_mode = transaction or session, not statement.',
      { cause: error },
    );
  }
  return translateDatabaseError(error);
}

/** Kysely 0.28+ marks its AbortedTransactionError with this registered symbol (0.27 has none). */
function isKyselyAbortedTransaction(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[Symbol.for('kysely.AbortedTransactionError')] === true;
}
