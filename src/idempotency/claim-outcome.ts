/**
 * What both modes of an idempotent call (in-transaction and two-phase) do with a claim: build the
 * request, wait out a live lease, and turn a finished record into a replay or a recorded error.
 */
import {
  IdempotencyInProgressError,
  ReentrantCallError,
  IdempotencyKeyReusedError,
  RateLimitedError,
  ResultNotSerializableError,
  ResultTooLargeError,
} from '../errors.ts';
import { JsonTextError, toJsonText } from '../internal/json-text.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import { fingerprint } from '../keys.ts';
import type { ResolvedRunIdempotentOptions } from './run-idempotent-options.ts';
import { settings } from '../settings.ts';
import { type DedupeAuditEvent, emitAuditEvent } from './audit-event.ts';
import { claim, type ClaimRequest, OWN_WRITE_WAIT_MILLISECONDS, retryAfterMs } from './claim.ts';
import type { ClaimRow } from './sql/claim-key.ts';
import type { Jsonify } from './jsonify.ts';
import { markRecordedFailure } from './recorded-failure.ts';
import { noteRejection } from './rejection-audit.ts';
import type { RateCharge } from './sql/store-outcome.ts';
import { StoredCallError } from './stored-error.ts';
import { transactionState } from './transaction-state.ts';
import { tryTakeWaitSlot } from './wait-slots.ts';
import { knownStatementTimeout, noteStatementTimeout } from './calls-in-flight.ts';
import { sleep } from '../internal/sleep.ts';

export interface IdempotentOutcome<T> {
  /** What fn returned, as JSON round-trips it: identical on the first call and every replay. */
  value: Jsonify<T>;
  /** 'executed': fn ran in this call. 'replayed': the stored result was returned; fn did not run. */
  outcome: 'executed' | 'replayed';
  /** True when this call waited for a concurrent call with the same key. */
  waited: boolean;
}

export function claimRequest(key: string, opts: ResolvedRunIdempotentOptions): ClaimRequest {
  return {
    key,
    version: opts.version,
    tool: opts.tool,
    fingerprint: opts.request === undefined ? null : fingerprint(opts.request),
    ttlMs: opts.ttl,
    waitMs: opts.waitMs,
  };
}

/**
 * The claim of the in-transaction mode, within `waitMs`. The first round trip never waits: it
 * claims, replays, or learns that the key is claimed by a call still in flight ('busy', or a
 * two-phase call's live lease). Only then does the call take one of its pool's wait slots
 * (wait-slots.ts explains why they are bounded) and wait, blocking in the database on the claim
 * in flight or polling a live lease with backoff. Time spent queueing for the pooled connection
 * counts against `waitMs`: a caller who waited 800 ms for a connection has 200 ms of a 1 s
 * budget left, so its total wait stays within what it asked for.
 */
export async function claimWithinWait(tx: TransactionClient, request: ClaimRequest, maxWaiting: number, duplicate = false): Promise<ClaimRow> {
  const state = transactionState(tx.owner);
  const deadline = performance.now() + request.waitMs - (state?.poolWaitMs ?? 0);
  const left = () => Math.max(0, deadline - performance.now());
  // A duplicate of a call in flight in this process (calls-in-flight.ts) blocks on its first
  // claim when it gets a wait slot at once; every other call first asks without waiting. Only
  // with a wait at least as long as a non-blocking claim's floor for its own write: should the
  // key turn out free, the blocking claim's INSERT waits on row locks no longer than the wait.
  // (Its statement_timeout is the one claims on this handle last reported: a transaction that
  // lowered its own with SET LOCAL may see the wait cut short, IDEMPOTENCY_IN_PROGRESS, retryable.)
  let release = duplicate && state && left() >= OWN_WRITE_WAIT_MILLISECONDS ? tryTakeWaitSlot(state.db, maxWaiting) : undefined;
  try {
    const found = await claim(
      tx,
      request,
      release
        ? { waitMs: left(), block: true, waited: false, statementTimeoutMs: knownStatementTimeout(state!.db) }
        : { waitMs: left(), block: false, waited: false },
    );
    if (state) noteStatementTimeout(state.db, found.statement_timeout_ms);
    if (!mustWait(found, request.key)) return found;
    // A transaction the caller opened itself has no known pool, so its waits are not counted.
    release ??= state ? tryTakeWaitSlot(state.db, maxWaiting) : () => {};
    if (!release) throw inProgressError(request, found);
    return await waitOut(tx, request, found, left);
  } finally {
    release?.();
  }
}

/** Claims again, blocking (a live lease: polling with backoff), until the key is free, replayable, or the wait is over. */
async function waitOut(tx: TransactionClient, request: ClaimRequest, first: ClaimRow, left: () => number): Promise<ClaimRow> {
  let found = first;
  let pause = 25;
  for (;;) {
    if (left() <= 0) throw inProgressError(request, found);
    if (found.outcome === 'in_progress') {
      await sleep(Math.min(pause, left()));
      pause = Math.min(pause * 2, 500);
    }
    found = await claim(tx, request, { waitMs: left(), block: true, waited: true, statementTimeoutMs: found.statement_timeout_ms });
    if (!mustWait(found, request.key)) return found;
  }
}

/** True when the key is claimed by a call in flight; throws at once when that call is this one. */
export function mustWait(found: ClaimRow, key: string): boolean {
  if (found.outcome === 'reentrant') throw reentrantError(key);
  return found.outcome === 'busy' || found.outcome === 'in_progress';
}

export function reentrantError(key: string): ReentrantCallError {
  return new ReentrantCallError(
    `pg-once: key "${key}" was used again inside its own call, which has not finished and would wait for itself; give the inner call a key of its own.`,
  );
}

/** Past the wait: retry when the live lease (two-phase mode) should be over, else soon. */
export function inProgressError(request: ClaimRequest, found: ClaimRow): IdempotencyInProgressError {
  const leaseLeft = found.locked_until_ms !== null ? found.locked_until_ms - Date.now() : request.waitMs;
  return noteRejection(new IdempotencyInProgressError(request.key, retryAfterMs(Math.max(leaseLeft, 0))), request);
}

/**
 * A claim that found something other than a fresh claim: the replay to return, or the recorded
 * error to throw (key reused, rate limited, stored failure). Undefined when the call must execute.
 */
export function settleClaim<T>(found: ClaimRow, key: string, opts: ResolvedRunIdempotentOptions): IdempotentOutcome<T> | undefined {
  const logger = opts.logger ?? settings().logger;
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
      return undefined;
  }
}

export function rateCharge(found: ClaimRow): RateCharge | undefined {
  if (found.limit_tool === null || found.limit_emission_ms === null || found.limit_tolerance_ms === null) return undefined;
  return { tool: found.limit_tool, emissionMs: found.limit_emission_ms, toleranceMs: found.limit_tolerance_ms };
}

/** The JSON text to store for `value`, or a coded error (not JSON; over maxResultBytes). */
export function storableResult(value: unknown, key: string, maxBytes: number): string | undefined {
  let text: string | undefined;
  try {
    text = toJsonText(value);
  } catch (error) {
    if (error instanceof JsonTextError) {
      throw new ResultNotSerializableError(`pg-once: the result of key "${key}" is not JSON: ${error.message}.`, { cause: error });
    }
    throw error;
  }
  const bytes = text === undefined ? 0 : Buffer.byteLength(text);
  if (bytes > maxBytes) throw new ResultTooLargeError(bytes, maxBytes);
  return text;
}

/** A throwing storeError predicate must not turn one failure into another: treat it as "no". */
export function wantsStored(predicate: ((error: unknown) => boolean) | undefined, error: unknown): boolean {
  if (!predicate) return false;
  try {
    return predicate(error) === true;
  } catch {
    return false;
  }
}
