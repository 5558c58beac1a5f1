/**
 * runIdempotent(tx, key, fn, opts): `fn(tx)` runs at most once per (tenant, key, version) while
 * the record lives; its writes commit atomically with the claim and the stored result.
 *
 * Round trips of a fresh call: the claim, fn's own statements, the UPDATE storing the result.
 * A replay: the claim alone (it returns the stored result and writes the audit row itself).
 */
import type { Transaction } from 'kysely';
import { NotInTransactionError, RateLimitedError, TenantMissingError, TransactionMisuseError, translateDatabaseError } from '../errors.ts';
import { quoteIdentifier } from '../internal/bind-variables.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import { kyselyClient } from '../drivers/kysely-driver.ts';
import { assertValidKey } from '../keys.ts';
import { parseOptions } from '../options.ts';
import { type ResolvedRunIdempotentOptions, type RunIdempotentOptions, runIdempotentOptionsSchema } from './run-idempotent-options.ts';
import { isResolved } from '../internal/resolved-options.ts';
import { traceCall } from '../telemetry.ts';
import { callContext } from './call-context.ts';
import { enterCall } from './calls-in-flight.ts';
import {
  claimRequest,
  claimWithinWait,
  type IdempotentOutcome,
  rateCharge,
  reentrantError,
  settleClaim,
  storableResult,
  wantsStored,
} from './claim-outcome.ts';
import type { Jsonify } from './jsonify.ts';
import { recordFailure } from './recorded-failure.ts';
import { abortCall, failEndedCall, type RateCharge, type RecordId, storeFailure, storeResult, storeResultStatement } from './sql/store-outcome.ts';
import { transactionState } from './transaction-state.ts';
import { describeError } from './stored-error.ts';

export type { IdempotentOutcome } from './claim-outcome.ts';

/** Parsed once: most calls pass no options, and parsing is then pure overhead. */
const DEFAULT_OPTIONS = parseOptions(runIdempotentOptionsSchema, {}, 'runIdempotent options');
let savepointCounter = 0;

/**
 * runIdempotent for one database library, whose transactions `clientOf` opens to pg-once (see
 * src/drivers/). `fn` is handed back the caller's own transaction object.
 */
export function runIdempotentFor<Tx>(clientOf: (tx: Tx) => TransactionClient | undefined) {
  /** The span and counters around every call (no-ops without an OpenTelemetry SDK). */
  function detailed<T>(tx: Tx, key: string, fn: (tx: Tx) => Promise<T>, options?: RunIdempotentOptions): Promise<IdempotentOutcome<T>> {
    return traceCall({ key, tool: options?.tool, mode: 'transaction' }, (span) =>
      runIdempotentCall(
        clientOf(tx),
        key,
        () => fn(tx),
        options,
        (tenantId) => span.setAttribute('once.tenant_id', tenantId),
      ),
    );
  }
  return Object.assign(
    async function runIdempotent<T>(tx: Tx, key: string, fn: (tx: Tx) => Promise<T>, options?: RunIdempotentOptions): Promise<Jsonify<T>> {
      return (await detailed(tx, key, fn, options)).value;
    },
    { detailed },
  );
}

/** runIdempotent's signature for a library whose transaction type is `Tx`. */
export interface RunIdempotent<Tx> {
  <T>(tx: Tx, key: string, fn: (tx: Tx) => Promise<T>, options?: RunIdempotentOptions): Promise<Jsonify<T>>;
  /** Also says whether the call executed or replayed. */
  detailed<T>(tx: Tx, key: string, fn: (tx: Tx) => Promise<T>, options?: RunIdempotentOptions): Promise<IdempotentOutcome<T>>;
}

async function runIdempotentCall<T>(
  tx: TransactionClient | undefined,
  key: string,
  fn: () => Promise<T>,
  options: RunIdempotentOptions | undefined,
  onTenant: (tenantId: string) => void,
): Promise<IdempotentOutcome<T>> {
  if (!tx) {
    throw new NotInTransactionError(
      'pg-once: runIdempotent needs a transaction with a tenant set: withTenant(db, tenantId, tx => runIdempotent(tx, key, fn)).',
    );
  }
  assertValidKey(key);
  const opts =
    options === undefined ? DEFAULT_OPTIONS : isResolved(options) ? options : parseOptions(runIdempotentOptionsSchema, options, 'runIdempotent options');
  refuseReentry(tx, key, opts.version);
  const state = transactionState(tx.owner);
  const call = state && enterCall(state.db, state.tenantId, key, opts.version);
  try {
    const found = await claimWithinWait(tx, claimRequest(key, opts), opts.maxWaiting, call?.duplicate);
    onTenant(found.tenant_id);
    const settled = settleClaim<T>(found, key, opts);
    if (settled) return settled;
    return await execute(tx, { tenantId: found.tenant_id, key, version: opts.version }, fn, opts, found.waited, rateCharge(found));
  } finally {
    call?.leave();
  }
}

/**
 * The same key inside its own call (fn calls runIdempotent with it, directly or deep down) would
 * wait for its own claim, which cannot end before it does. Known here without a round trip when
 * the outer call is on the async call chain; once.claim_key also refuses it in the database.
 */
function refuseReentry(tx: TransactionClient, key: string, version: string): void {
  const tenantId = transactionState(tx.owner)?.tenantId;
  for (let call = callContext.getStore(); call; call = call.parent) {
    if (call.key === key && call.version === version && (call.tx === tx.owner || call.tenantId === tenantId)) throw reentrantError(key);
  }
}

async function execute<T>(
  tx: TransactionClient,
  record: RecordId,
  fn: () => Promise<T>,
  opts: ResolvedRunIdempotentOptions,
  waited: boolean,
  charge: RateCharge | undefined,
): Promise<IdempotentOutcome<T>> {
  // Only a stored failure needs fn's partial writes undone while keeping the claim, and only that
  // pays for a savepoint.
  const savepoint = opts.storeError ? `once_call_${++savepointCounter}` : undefined;
  if (savepoint) await tx.query(`SAVEPOINT ${quoteIdentifier(savepoint)}`, []);

  let value: T;
  try {
    value = await callContext.run({ tx: tx.owner, ...record, position: 0, parent: callContext.getStore() }, fn);
  } catch (error) {
    if (savepoint && wantsStored(opts.storeError, error)) {
      await tx.query(`ROLLBACK TO SAVEPOINT ${quoteIdentifier(savepoint)}`, []);
      await detectEndedTransaction(tx, record, () => storeFailure(tx, record, JSON.stringify(describeError(error))));
      throw recordFailure(tx.owner, error);
    }
    await abortCall(tx, error);
    throw error;
  }

  let text: string | undefined;
  try {
    text = storableResult(value, record.key, opts.maxResultBytes);
  } catch (error) {
    await abortCall(tx, error);
    throw error;
  }
  const executed: IdempotentOutcome<T> = { value: (text === undefined ? undefined : JSON.parse(text)) as Jsonify<T>, outcome: 'executed', waited };
  if (!charge && tx.defer) {
    // The result's UPDATE goes with the transaction's COMMIT (one round trip for both) or right
    // before its next statement, which therefore sees the record completed. Its failure comes
    // from that statement or COMMIT, and the transaction does not commit: nothing of the call
    // persists, as when the store fails here. A charged store stays here: losing the race for
    // the last token must fail this call (RATE_LIMITED), not the statement after it.
    tx.defer({ ...storeResultStatement(record, text), onError: (error, direct) => endedTransactionOr(direct, record, translateDatabaseError(error)) });
    return executed;
  }
  if (!(await detectEndedTransaction(tx, record, () => storeResult(tx, record, text, charge)))) {
    // Lost the race for the tenant's last token after fn ran: its writes roll back with the call.
    const error = new RateLimitedError(record.key, Math.max(1, Math.ceil(charge!.emissionMs)));
    await abortCall(tx, error);
    throw error;
  }
  return executed;
}

/**
 * Runs the statement that stores the outcome. It is the first of pg-once's statements after fn,
 * so it is where a fn that ended the transaction itself (COMMIT or ROLLBACK) shows: the tenant,
 * set for the transaction only, is gone (ONC01). That is a coded error at once, and a committed
 * claim is stored as failed rather than left in progress for its ttl (see failEndedCall).
 */
async function detectEndedTransaction<R>(tx: TransactionClient, record: RecordId, store: () => Promise<R>): Promise<R> {
  try {
    return await store();
  } catch (error) {
    return endedTransactionOr(tx, record, error);
  }
}

/** Throws the store's (translated) `error`, or TRANSACTION_MISUSE after failEndedCall when it shows fn ended the transaction. */
async function endedTransactionOr(tx: TransactionClient, record: RecordId, error: unknown): Promise<never> {
  if (!(error instanceof TenantMissingError)) throw error;
  const ended = new TransactionMisuseError(
    `pg-once: the transaction of key "${record.key}" ended while its call ran: fn must not COMMIT or ROLLBACK it ` +
      '(use a savepoint, or a transaction of its own on another connection).',
    { cause: error },
  );
  await failEndedCall(tx, record, JSON.stringify(describeError(ended)));
  throw ended;
}

/**
 * Runs `fn(tx)` at most once per (tenant, key, version) while the record lives, and returns its
 * result as JSON round-trips it; replays return the stored result without running `fn`.
 * `runIdempotent.detailed` also says whether the call executed or replayed. `fn` gets the
 * caller's `Transaction<DB>` back, typed.
 */
export const runIdempotent: {
  <T, DB = any>(tx: Transaction<DB>, key: string, fn: (tx: Transaction<DB>) => Promise<T>, options?: RunIdempotentOptions): Promise<Jsonify<T>>;
  /** Also says whether the call executed or replayed. */
  detailed<T, DB = any>(
    tx: Transaction<DB>,
    key: string,
    fn: (tx: Transaction<DB>) => Promise<T>,
    options?: RunIdempotentOptions,
  ): Promise<IdempotentOutcome<T>>;
} = runIdempotentFor<Transaction<any>>(kyselyClient);
