/**
 * runIdempotent(tx, key, fn, opts): `fn(tx)` runs at most once per (tenant, key, version) while
 * the record lives; its writes commit atomically with the claim and the stored result.
 *
 * Round trips of a fresh call: the claim, fn's own statements, the UPDATE storing the result.
 * A replay: the claim alone (it returns the stored result and writes the audit row itself).
 */
import { sql, type Transaction } from 'kysely';
import { NotInTransactionError, RateLimitedError } from '../errors.ts';
import { isTransaction } from '../internal/is-transaction.ts';
import { assertValidKey } from '../keys.ts';
import {
  parseOptions,
  type ResolvedRunIdempotentOptions,
  type RunIdempotentOptions,
  runIdempotentOptionsSchema,
} from '../options.ts';
import { traceCall } from '../telemetry.ts';
import { callContext } from './call-context.ts';
import {
  claimRequest,
  claimWithinWait,
  type IdempotentOutcome,
  rateCharge,
  settleClaim,
  storableResult,
  wantsStored,
} from './claim-outcome.ts';
import type { Jsonify } from './jsonify.ts';
import { markRecordedFailure } from './recorded-failure.ts';
import { abortCall, type RateCharge, type RecordId, storeFailure, storeResult } from './store-outcome.ts';
import { describeError } from './stored-error.ts';

export type { IdempotentOutcome } from './claim-outcome.ts';

/** Parsed once: most calls pass no options, and parsing is then pure overhead. */
const DEFAULT_OPTIONS = parseOptions(runIdempotentOptionsSchema, {}, 'runIdempotent options');
let savepointCounter = 0;

/** The span and counters around every call (no-ops without an OpenTelemetry SDK). */
function runIdempotentDetailed<T>(
  tx: Transaction<any>,
  key: string,
  fn: (tx: Transaction<any>) => Promise<T>,
  options?: RunIdempotentOptions,
): Promise<IdempotentOutcome<T>> {
  return traceCall({ key, tool: options?.tool, mode: 'transaction' }, (span) =>
    runIdempotentCall(tx, key, fn, options, (tenantId) => span.setAttribute('once.tenant_id', tenantId)),
  );
}

async function runIdempotentCall<T>(
  tx: Transaction<any>,
  key: string,
  fn: (tx: Transaction<any>) => Promise<T>,
  options: RunIdempotentOptions | undefined,
  onTenant: (tenantId: string) => void,
): Promise<IdempotentOutcome<T>> {
  if (!isTransaction(tx)) {
    throw new NotInTransactionError(
      'pg-once: runIdempotent needs a transaction with a tenant set: withTenant(db, tenantId, tx => runIdempotent(tx, key, fn)).',
    );
  }
  assertValidKey(key);
  const opts = options === undefined ? DEFAULT_OPTIONS : parseOptions(runIdempotentOptionsSchema, options, 'runIdempotent options');
  const found = await claimWithinWait(tx, claimRequest(key, opts));
  onTenant(found.tenant_id);
  const settled = settleClaim<T>(found, key, opts);
  if (settled) return settled;
  return execute(tx, { tenantId: found.tenant_id, key, version: opts.version }, fn, opts, found.waited, rateCharge(found));
}

async function execute<T>(
  tx: Transaction<any>,
  record: RecordId,
  fn: (tx: Transaction<any>) => Promise<T>,
  opts: ResolvedRunIdempotentOptions,
  waited: boolean,
  charge: RateCharge | undefined,
): Promise<IdempotentOutcome<T>> {
  // Only a stored failure needs fn's partial writes undone while keeping the claim, and only that
  // pays for a savepoint.
  const savepoint = opts.storeError ? `once_call_${++savepointCounter}` : undefined;
  if (savepoint) await sql`SAVEPOINT ${sql.id(savepoint)}`.execute(tx);

  let value: T;
  try {
    value = await callContext.run({ tx, ...record, position: 0 }, () => fn(tx));
  } catch (error) {
    if (savepoint && wantsStored(opts.storeError, error)) {
      await sql`ROLLBACK TO SAVEPOINT ${sql.id(savepoint)}`.execute(tx);
      await storeFailure(tx, record, JSON.stringify(describeError(error)));
      throw markRecordedFailure(error);
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
  if (!(await storeResult(tx, record, text, charge))) {
    // Lost the race for the tenant's last token after fn ran: its writes roll back with the call.
    const error = new RateLimitedError(record.key, Math.max(1, Math.ceil(charge!.emissionMs)));
    await abortCall(tx, error);
    throw error;
  }
  return { value: (text === undefined ? undefined : JSON.parse(text)) as Jsonify<T>, outcome: 'executed', waited };
}

/**
 * Runs `fn(tx)` at most once per (tenant, key, version) while the record lives, and returns its
 * result as JSON round-trips it; replays return the stored result without running `fn`.
 * `runIdempotent.detailed` also says whether the call executed or replayed.
 */
export const runIdempotent = Object.assign(
  async function runIdempotent<T>(
    tx: Transaction<any>,
    key: string,
    fn: (tx: Transaction<any>) => Promise<T>,
    options?: RunIdempotentOptions,
  ): Promise<Jsonify<T>> {
    return (await runIdempotentDetailed(tx, key, fn, options)).value;
  },
  { detailed: runIdempotentDetailed },
);
