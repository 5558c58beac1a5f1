/**
 * The `_meta` keys pg-once reads and writes on MCP messages. MCP has no idempotency key of its own
 * (a proposal for one was closed), and `_meta` is the protocol's place for such extensions; the
 * reverse-DNS prefix follows the spec's rule for `_meta` names that are not the protocol's.
 */

/** Request `_meta` key carrying the caller's idempotency key (a string, at most 251 characters). */
export const IDEMPOTENCY_KEY_META = 'dev.pg-once/idempotency-key';

/** Result `_meta` key: 'executed' when the handler ran for this request, 'replayed' when its stored result was returned. */
export const OUTCOME_META = 'dev.pg-once/outcome';

/**
 * Result `_meta` key of an error result pg-once produced: `{ code, retryable, httpStatus }` of the
 * error, plus `retryAfterMs` when the same call should be retried later (IDEMPOTENCY_IN_PROGRESS,
 * RATE_LIMITED).
 */
export const ERROR_META = 'dev.pg-once/error';

export interface ErrorMeta {
  code: string;
  retryable: boolean;
  httpStatus?: number;
  retryAfterMs?: number;
}
