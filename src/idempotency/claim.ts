/**
 * The claim: one round trip to once.claim() (sql/0002_claim_function.sql), which inserts the
 * in-progress record, or finds the result to replay, the reused key, the expired record to take
 * over, or waits for a concurrent duplicate. All of that in one statement, because every round
 * trip here is paid by every tool call.
 */
import { sql, type Transaction } from 'kysely';
import { IdempotencyInProgressError, translateDatabaseError } from '../errors.ts';

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

export interface ClaimRow {
  outcome: 'claimed' | 'replay' | 'key_reused' | 'in_progress' | 'rate_limited';
  tenant_id: string;
  status: 'in_progress' | 'completed' | 'failed';
  /** JSON text of the stored result; null when fn returned undefined. */
  result: string | null;
  error: StoredError | null;
  waited: boolean;
  locked_until: Date | null;
  /** rate_limited: when a token will be available. */
  retry_after_ms: number | null;
  /** claimed under a rate limit: the bucket to charge with the result, and its GCRA parameters. */
  limit_tool: string | null;
  limit_emission_ms: number | null;
  limit_tolerance_ms: number | null;
}

/** How a stored failure is kept: enough to re-throw an equivalent error. */
export interface StoredError {
  name: string;
  message: string;
  code?: string | number;
  httpStatus?: number;
  retryable?: boolean;
}

/** SQLSTATE lock_not_available: the claim's lock_timeout (waitMs) ran out. */
const LOCK_NOT_AVAILABLE = '55P03';

export async function claim(tx: Transaction<any>, request: ClaimRequest): Promise<ClaimRow> {
  try {
    const { rows } = await sql<ClaimRow>`
      SELECT * FROM once.claim(${request.key}, ${request.version}, ${request.tool ?? null},
                               ${request.fingerprint}, ${request.ttlMs}, ${request.waitMs},
                               ${request.lease?.ms ?? null}, ${request.lease?.token ?? null})`.execute(tx);
    return rows[0]!;
  } catch (error) {
    if ((error as { code?: unknown }).code === LOCK_NOT_AVAILABLE) {
      throw new IdempotencyInProgressError(request.key, retryAfterMs(request.waitMs), { cause: error });
    }
    throw translateDatabaseError(error);
  }
}

/** A retry hint: soon enough to catch a quick first call, never longer than 5 s. */
export function retryAfterMs(waitMs: number): number {
  return Math.max(100, Math.min(waitMs, 5_000));
}
