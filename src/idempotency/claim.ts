/**
 * The claim: one round trip to once.claim_key() (made by sql/0007_bounded_claims.sql, last replaced
 * by sql/0018_claim_key_assignments.sql; the statement is in sql/claim-key.ts), which inserts
 * the in-progress record, or finds the result to replay, the reused key, the expired record to
 * take over, or (only when asked to block) waits for a concurrent duplicate. All of that in one
 * statement, because every round trip here is paid by every tool call.
 */
import { CallAbortedError, IdempotencyInProgressError, translateDatabaseError } from '../errors.ts';
import { isDeferredFailure } from '../internal/deferred-failure.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import { transactionState } from './transaction-state.ts';
import { noteRejection } from './rejection-audit.ts';
import { type ClaimRow, claimKey, raiseStatementTimeout } from './sql/claim-key.ts';

export interface ClaimRequest {
  key: string;
  version: string;
  tool: string | undefined;
  fingerprint: Buffer | null;
  ttlMs: number;
  waitMs: number;
  /** Two-phase mode only: commit the claim with this lease, under this token. */
  lease?: { ms: number; token: string };
}

/** How one round trip may wait: `block` false answers 'busy' instead of waiting for a claim in flight. */
export interface ClaimMode {
  /** The longest this statement may wait, in all, in milliseconds. */
  waitMs: number;
  block: boolean;
  /** An earlier round trip of this call waited already (recorded as 'waited', not 'replay'). */
  waited: boolean;
  /**
   * The statement_timeout an earlier claim of this call reported (milliseconds, 0: none): a
   * blocking claim raises it only when it would cut the wait short. Unknown: raised if lower.
   */
  statementTimeoutMs?: number;
}

/**
 * What a claim that does not block may wait on the locks of its own write, in milliseconds. Such
 * a claim waits for no duplicate: it answers 'busy' when the key's advisory lock is taken. Holding
 * that lock, it inserts (or takes over) the record, and once.claim_key bounds that write's lock
 * waits by p_wait_ms, which is what is left of `waitMs`: 0 for a caller that wants duplicates
 * refused at once (the HTTP adapters' default), which became a 1 ms lock_timeout. Those waits are
 * not duplicates: a relation extension lock while many claims insert at once (a brand-new key was
 * answered IDEMPOTENCY_IN_PROGRESS under the HTTP suite's 200 concurrent requests), a CREATE
 * INDEX, a sweep deleting the expired record being taken over. So the write gets at least this
 * long; waits for duplicates (p_block) keep exactly what is left of waitMs. (A client of a version
 * before 0007, which claims without the advisory lock, is waited for up to this long as well during
 * a rolling upgrade.)
 */
export const OWN_WRITE_WAIT_MILLISECONDS = 1_000;

/** SQLSTATE lock_not_available: the claim's wait ran out. */
const LOCK_NOT_AVAILABLE = '55P03';
/** SQLSTATE query_canceled: a statement_timeout (or a cancel) ended the wait. */
const QUERY_CANCELED = '57014';
/** SQLSTATE in_failed_sql_transaction: a statement in a transaction that is already aborted. */
const IN_FAILED_TRANSACTION = '25P02';

export async function claim(tx: TransactionClient, request: ClaimRequest, mode: ClaimMode): Promise<ClaimRow> {
  try {
    if (mode.block) await raiseForWait(tx, mode.waitMs, mode.statementTimeoutMs);
    return await claimKey(tx, {
      key: request.key,
      version: request.version,
      tool: request.tool ?? null,
      fingerprint: request.fingerprint,
      ttlMs: request.ttlMs,
      waitMs: mode.block ? Math.max(0, Math.ceil(mode.waitMs)) : Math.max(Math.ceil(mode.waitMs), OWN_WRITE_WAIT_MILLISECONDS),
      leaseMs: request.lease?.ms ?? null,
      leaseToken: request.lease?.token ?? null,
      block: mode.block,
      waited: mode.waited,
    });
  } catch (error) {
    throw claimError(tx, request, mode, error);
  }
}

/**
 * A role's statement_timeout shorter than the wait would end it with a raw SQLSTATE 57014. The
 * timer of a statement is armed when it starts, so it is raised here, for the claim statement that
 * follows only: once.claim_key puts the saved value back first thing. Never lowered, and left
 * alone when disabled (0). One more round trip, paid only by calls about to wait, and only when
 * the timeout the first claim reported (`knownMs`) would cut the wait short (or is unknown).
 */
async function raiseForWait(tx: TransactionClient, waitMs: number, knownMs: number | undefined): Promise<void> {
  const neededMs = Math.ceil(waitMs) + STATEMENT_MARGIN_MILLISECONDS;
  if (knownMs !== undefined && Number.isFinite(knownMs) && (knownMs <= 0 || knownMs >= neededMs)) return;
  await raiseStatementTimeout(tx, neededMs);
}
/** Room for the claim's own work after its wait, in milliseconds. */
const STATEMENT_MARGIN_MILLISECONDS = 1_000;

function claimError(tx: TransactionClient, request: ClaimRequest, mode: ClaimMode, error: unknown): unknown {
  // An earlier call's stored result, sent ahead of this claim, failed: its error, not this claim's.
  if (isDeferredFailure(error)) return error;
  const sqlstate = (error as { code?: unknown }).code;
  if (sqlstate === LOCK_NOT_AVAILABLE || sqlstate === QUERY_CANCELED) {
    return noteRejection(new IdempotencyInProgressError(request.key, retryAfterMs(mode.waitMs), { cause: error }), request);
  }
  const abortedBy = transactionState(tx.owner)?.abortedBy;
  if (sqlstate === IN_FAILED_TRANSACTION && abortedBy) {
    return new CallAbortedError('pg-once: an idempotent call failed earlier in this transaction, which it aborted on purpose.', { cause: abortedBy.error });
  }
  return translateDatabaseError(error);
}

/** A retry hint: soon enough to catch a quick first call, never longer than 5 s. */
export function retryAfterMs(waitMs: number): number {
  return Math.max(100, Math.min(waitMs, 5_000));
}
