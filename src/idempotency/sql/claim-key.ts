/**
 * The claim statement: one call of once.claim_key() (sql/0007_bounded_claims.sql, as sql/0013 and
 * sql/0015 and sql/0018 redefined it), and the statement that raises the statement_timeout for it when it is
 * about to wait. claim.ts decides what to ask and what the answer means.
 */
import type { TransactionClient } from '../../internal/transaction-client.ts';

export interface ClaimRow {
  outcome: 'claimed' | 'replay' | 'key_reused' | 'in_progress' | 'rate_limited' | 'busy' | 'reentrant';
  tenant_id: string;
  status: 'in_progress' | 'completed' | 'failed';
  /** JSON text of the stored result, as written; null when fn returned undefined. */
  result: string | null;
  error: StoredError | null;
  waited: boolean;
  /** When a two-phase call's live lease ends, in epoch milliseconds. */
  locked_until_ms: number | null;
  /** rate_limited: when a token will be available. */
  retry_after_ms: number | null;
  /** claimed under a rate limit: the bucket to charge with the result, and its GCRA parameters. */
  limit_tool: string | null;
  limit_emission_ms: number | null;
  limit_tolerance_ms: number | null;
  /** The transaction's statement_timeout after the claim, in milliseconds (0: none). */
  statement_timeout_ms: number;
}

/** How a stored failure is kept: enough to re-throw an equivalent error. */
export interface StoredError {
  name: string;
  message: string;
  code?: string | number;
  httpStatus?: number;
  retryable?: boolean;
}

/** once.claim_key's parameters, in its order. */
export interface ClaimKeyParameters {
  key: string;
  version: string;
  tool: string | null;
  fingerprint: Buffer | null;
  ttlMs: number;
  /** The longest the statement may wait, in all, in whole milliseconds. */
  waitMs: number;
  leaseMs: number | null;
  leaseToken: string | null;
  /** false: answer 'busy' instead of waiting for a claim in flight. */
  block: boolean;
  /** An earlier round trip of this call waited already. */
  waited: boolean;
}

/**
 * The columns are listed rather than `*` so that every database library reads them alike (see
 * transaction-client.ts): the stored error as JSON text, the lease end as epoch milliseconds.
 */
const CLAIM_COLUMNS = `
  SELECT outcome, tenant_id, status, result, error::text AS error, waited,
         extract(epoch FROM locked_until)::float8 * 1000 AS locked_until_ms,
         retry_after_ms, limit_tool, limit_emission_ms, limit_tolerance_ms,
         extract(epoch FROM current_setting('statement_timeout')::interval)::float8 * 1000 AS statement_timeout_ms`;
const CLAIM_FROM = `
    FROM once.claim_key($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`;
/**
 * The statement_timeout is read after claim_key put back any value raised for its wait, so it is
 * the one later statements run under.
 */
export const CLAIM_KEY_TEXT = `${CLAIM_COLUMNS}${CLAIM_FROM}`;

/** Runs the claim; database errors are the caller's to translate (claim.ts knows what a wait's end means). */
export async function claimKey(tx: TransactionClient, p: ClaimKeyParameters): Promise<ClaimRow> {
  const rows = await tx.query<Omit<ClaimRow, 'error'> & { error: string | null }>(CLAIM_KEY_TEXT, [
    p.key,
    p.version,
    p.tool,
    p.fingerprint,
    p.ttlMs,
    p.waitMs,
    p.leaseMs,
    p.leaseToken,
    p.block,
    p.waited,
  ]);
  const row = rows[0]!;
  return {
    ...row,
    // Some libraries read float8 as text (see transaction-client.ts).
    statement_timeout_ms: Number(row.statement_timeout_ms),
    error: row.error === null ? null : (JSON.parse(row.error) as StoredError),
  };
}

/**
 * Raises statement_timeout to `neededMs` for the next statement (transaction-local), saving the
 * role's value in once.saved_statement_timeout for once.claim_key to put back first thing. Only
 * a timeout that is set (not 0) and lower is raised.
 */
export const RAISE_STATEMENT_TIMEOUT_TEXT = `
  SELECT set_config('once.saved_statement_timeout', s.setting, true),
         set_config('statement_timeout', $1, true)
    FROM pg_settings s
   WHERE s.name = 'statement_timeout' AND s.setting::bigint > 0 AND s.setting::bigint < $2`;

export async function raiseStatementTimeout(tx: TransactionClient, neededMs: number): Promise<void> {
  await tx.query(RAISE_STATEMENT_TIMEOUT_TEXT, [String(neededMs), neededMs]);
}
