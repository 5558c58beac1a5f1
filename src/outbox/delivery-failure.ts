/**
 * What a failed delivery does to its event: the relay's failure classification, shared by
 * startRelay and drainOnce so that both treat every error alike.
 */
import { DeliveryFailedError, DeliveryRejectedError } from '../errors.ts';
import type { BackoffPolicy } from './backoff.ts';
import type { LeaseRef } from './sql/event-refs.ts';
import type { Failure } from './sql/mark-failed.ts';

/**
 * Dead at once when the sink rejected the event for good (DeliveryRejectedError: the permanent
 * set, e.g. httpSink's isPermanent) or this was its last attempt; else retried after the
 * receiver's hint (DeliveryFailedError.retryAfterMs) or the backoff.
 */
export function deliveryFailure(event: LeaseRef, error: unknown, maxAttempts: number, backoff: BackoffPolicy): Failure {
  const rejected = error instanceof DeliveryRejectedError;
  const dead = rejected || event.attempt >= maxAttempts;
  const hinted = error instanceof DeliveryFailedError ? error.retryAfterMs : undefined;
  return {
    tenantId: event.tenantId,
    id: event.id,
    attempt: event.attempt,
    dead,
    delayMs: dead ? 0 : (hinted ?? backoff(event.attempt)),
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  };
}
