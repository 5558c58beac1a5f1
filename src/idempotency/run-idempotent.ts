/**
 * runIdempotent(tx, key, fn, opts): `fn(tx)` runs at most once per (tenant, key, version) while
 * the record lives; its writes commit atomically with the claim and the stored result.
 *
 * Round trips of a fresh call: the claim, fn's own statements, the UPDATE storing the result.
 * A replay: the claim alone (it returns the stored result and writes the audit row itself).
 */
import { sql, type Transaction } from 'kysely';
import {
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  NotInTransactionError,
  RateLimitedError,
  ResultNotSerializableError,
  ResultTooLargeError,
} from '../errors.ts';
import { isTransaction } from '../internal/is-transaction.ts';
import { JsonTextError, toJsonText } from '../internal/json-text.ts';
import { assertValidKey, fingerprint } from '../keys.ts';
import {
  parseOptions,
  type ResolvedRunIdempotentOptions,
  type RunIdempotentOptions,
  runIdempotentOptionsSchema,
} from '../options.ts';
import { settings } from '../settings.ts';
import { endWithError, instruments, tracer } from '../telemetry.ts';
import { type DedupeAuditEvent, emitAuditEvent } from './audit-event.ts';
import { callContext } from './call-context.ts';
import { claim, type ClaimRow, retryAfterMs } from './claim.ts';
import type { Jsonify } from './jsonify.ts';
import { markRecordedFailure } from './recorded-failure.ts';
import { abortCall, type RateCharge, type RecordId, storeFailure, storeResult } from './store-outcome.ts';
import { describeError, StoredCallError } from './stored-error.ts';

export interface IdempotentOutcome<T> {
  /** What fn returned, as JSON round-trips it: identical on the first call and every replay. */
  value: Jsonify<T>;
  /** 'executed': fn ran in this call. 'replayed': the stored result was returned; fn did not run. */
  outcome: 'executed' | 'replayed';
  /** True when this call waited for a concurrent call with the same key. */
  waited: boolean;
}

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
  return tracer.startActiveSpan('once.run_idempotent', async (span) => {
    const tool = typeof options?.tool === 'string' ? options.tool : '';
    span.setAttributes({ 'once.key': typeof key === 'string' ? key.slice(0, 255) : '', 'once.tool': tool });
    try {
      const result = await runIdempotentCall(tx, key, fn, options, (tenantId) => span.setAttribute('once.tenant_id', tenantId));
      const outcome = result.waited ? 'waited' : result.outcome;
      span.setAttribute('once.outcome', outcome);
      instruments().calls.add(1, { 'once.outcome': outcome, 'once.tool': tool });
      span.end();
      return result;
    } catch (error) {
      span.setAttribute('once.outcome', 'rejected');
      instruments().calls.add(1, { 'once.outcome': 'rejected', 'once.tool': tool });
      endWithError(span, error);
      throw error;
    }
  });
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
  const request = {
    key,
    version: opts.version,
    tool: opts.tool,
    fingerprint: opts.request === undefined ? null : fingerprint(opts.request),
    ttlMs: opts.ttl,
    waitMs: opts.waitMs,
  };
  const logger = opts.logger ?? settings().logger;

  const found = await claimWithinWait(tx, request);
  onTenant(found.tenant_id);
  const audit = (kind: DedupeAuditEvent['kind'], detail: Record<string, unknown>) =>
    emitAuditEvent(logger, { tenantId: found.tenant_id, key, tool: opts.tool, kind, at: new Date(), detail: { version: opts.version, ...detail } });

  switch (found.outcome) {
    case 'key_reused':
      audit('key_reused', {});
      throw markRecordedFailure(new IdempotencyKeyReusedError(key));
    case 'rate_limited':
      audit('rate_limited', { retry_after_ms: found.retry_after_ms });
      throw markRecordedFailure(new RateLimitedError(key, Math.max(1, Math.ceil(found.retry_after_ms ?? 1_000))));
    case 'replay':
      audit(found.waited ? 'waited' : 'replay', { outcome: 'replayed', status: found.status });
      if (found.status === 'failed') throw markRecordedFailure(new StoredCallError(found.error ?? { name: 'Error', message: 'failed' }));
      return { value: (found.result === null ? undefined : JSON.parse(found.result)) as Jsonify<T>, outcome: 'replayed', waited: found.waited };
    default:
      if (found.waited) audit('waited', { outcome: 'executed' });
      return execute(tx, { tenantId: found.tenant_id, key, version: opts.version }, fn, opts, found.waited, rateCharge(found));
  }
}

/**
 * The claim, plus the one case the database cannot wait for by itself: a committed in-progress
 * claim with a live lease (the two-phase mode), which is polled with backoff until `waitMs`.
 */
async function claimWithinWait(tx: Transaction<any>, request: Parameters<typeof claim>[1]): Promise<ClaimRow> {
  const deadline = Date.now() + request.waitMs;
  let pause = 25;
  for (;;) {
    const found = await claim(tx, { ...request, waitMs: Math.max(1, deadline - Date.now()) });
    if (found.outcome !== 'in_progress') return found;
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      const leaseLeft = found.locked_until ? found.locked_until.getTime() - Date.now() : request.waitMs;
      throw new IdempotencyInProgressError(request.key, retryAfterMs(Math.max(leaseLeft, 0)));
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, remaining)));
    pause = Math.min(pause * 2, 500);
  }
}

function rateCharge(found: ClaimRow): RateCharge | undefined {
  if (found.limit_tool === null || found.limit_emission_ms === null || found.limit_tolerance_ms === null) return undefined;
  return { tool: found.limit_tool, emissionMs: found.limit_emission_ms, toleranceMs: found.limit_tolerance_ms };
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
    if (savepoint && wantsStored(opts.storeError!, error)) {
      await sql`ROLLBACK TO SAVEPOINT ${sql.id(savepoint)}`.execute(tx);
      await storeFailure(tx, record, JSON.stringify(describeError(error)));
      throw markRecordedFailure(error);
    }
    await abortCall(tx, error);
    throw error;
  }

  let text: string | undefined;
  try {
    text = toJsonText(value);
  } catch (error) {
    await abortCall(tx, error);
    if (error instanceof JsonTextError) {
      throw new ResultNotSerializableError(`pg-once: the result of key "${record.key}" is not JSON: ${error.message}.`, { cause: error });
    }
    throw error;
  }
  const bytes = text === undefined ? 0 : Buffer.byteLength(text);
  if (bytes > opts.maxResultBytes) {
    const error = new ResultTooLargeError(bytes, opts.maxResultBytes);
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

/** A throwing storeError predicate must not turn one failure into another: treat it as "no". */
function wantsStored(predicate: (error: unknown) => boolean, error: unknown): boolean {
  try {
    return predicate(error) === true;
  } catch {
    return false;
  }
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
