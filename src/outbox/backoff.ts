/**
 * Retry policy of the relay: exponential backoff with full jitter, as a function with a default*
 * factory so a user can swap the policy without touching the relay.
 */

/** Milliseconds to wait before attempt `attempt + 1`, given that attempt `attempt` just failed. */
export type BackoffPolicy = (attempt: number) => number;

export interface BackoffOptions {
  /** Delay after the first failure, in milliseconds. (Default: 250) */
  initialMs: number;
  /** Upper bound of any delay, in milliseconds. (Default: 300 000, i.e. 5 minutes) */
  maxMs: number;
}

/**
 * `initialMs * 2^(attempt-1)`, capped at `maxMs`, then "equal jitter": half fixed, half random.
 * Jitter spreads the retries of events that failed together (a receiver outage) so they do not
 * come back as one thundering herd; keeping half fixed keeps the delay from collapsing to ~0.
 */
export function defaultBackoff({ initialMs, maxMs }: BackoffOptions): BackoffPolicy {
  return (attempt) => {
    const exponential = Math.min(maxMs, initialMs * 2 ** Math.min(Math.max(attempt - 1, 0), 40));
    return Math.round(exponential / 2 + Math.random() * (exponential / 2));
  };
}

/** The longest time from first to last attempt under `policy`: sum of the worst-case delays. */
export function retryHorizonMs(options: BackoffOptions, maxAttempts: number): number {
  let total = 0;
  for (let attempt = 1; attempt < maxAttempts; attempt += 1) {
    total += Math.min(options.maxMs, options.initialMs * 2 ** Math.min(attempt - 1, 40));
  }
  return total;
}
