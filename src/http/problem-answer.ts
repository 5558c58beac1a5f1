/**
 * pg-once's refusals of a request as RFC 9457 `application/problem+json` answers: the status the
 * error class names (`httpStatus`), its stable `code` as an extension member clients branch on,
 * and `Retry-After` (RFC 9110, whole seconds, rounded up) when the error says when to come back.
 */
import { IdempotencyInProgressError, OnceError, RateLimitedError } from '../errors.ts';
import type { HttpAnswer } from './http-answer.ts';

/** RFC 9457 section 3: the members pg-once fills in, plus its own extensions. */
export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** pg-once's error code, e.g. `IDEMPOTENCY_KEY_REUSED`. */
  code: string;
  /** Whether the very same request may succeed later. */
  retryable: boolean;
  /** When to retry, in milliseconds (Retry-After rounds it up to seconds). */
  retryAfterMs?: number;
}

/** When to retry a retryable refusal that names no time of its own. */
const RETRY_SOON_MILLISECONDS = 1_000;

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  409: 'Conflict',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
};

/**
 * Whether an error is pg-once refusing the request, to answer as a problem. Its 5xx errors (a
 * missing schema, a role that bypasses RLS) are faults of the deployment, not of the request:
 * they go to the framework's error handler, to be logged, with no details for the client.
 */
export function isRefusal(error: unknown): error is OnceError {
  return error instanceof OnceError && error.httpStatus < 500;
}

export function problemAnswer(error: OnceError, type: (code: string) => string): HttpAnswer {
  const retryAfterMs =
    error instanceof IdempotencyInProgressError || error instanceof RateLimitedError
      ? error.retryAfterMs
      : error.retryable
        ? RETRY_SOON_MILLISECONDS // a transaction conflict: the same request again will do
        : undefined;
  const problem: ProblemDetails = {
    type: type(error.code),
    title: TITLES[error.httpStatus] ?? 'Request refused',
    status: error.httpStatus,
    detail: error.message,
    code: error.code,
    retryable: error.retryable,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  };
  const headers: Record<string, string> = { 'content-type': 'application/problem+json' };
  if (retryAfterMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfterMs / 1_000)));
  return { status: error.httpStatus, headers, body: Buffer.from(JSON.stringify(problem)) };
}
