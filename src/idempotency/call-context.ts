/**
 * The idempotent call a piece of code runs in, so that `enqueue` inside `fn` can derive dedupe
 * ids from the call (tenant, key, version, position) without the caller threading them through.
 * AsyncLocalStorage rather than a map keyed by transaction: two calls may share one transaction.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface CallContext {
  /** The caller's transaction object (TransactionClient.owner) the call runs in. */
  tx: object;
  tenantId: string;
  key: string;
  version: string;
  /** Events enqueued so far by this call; the next event's position. */
  position: number;
  /** The call this one runs inside of, if any (re-entrancy is refused along this chain). */
  parent?: CallContext | undefined;
  /**
   * An outbox id the claim reserved (in-transaction mode, no rate limit), for the call's first
   * event: enqueue then holds that event back, and the statement storing the result writes it.
   * Cleared by the first enqueue, whether it used it or not, and when fn's promise settles.
   */
  eventSlot?: string | undefined;
  /** The event held back, written with the result (or dropped with fn's writes when it fails). */
  heldEvent?: HeldEvent | undefined;
}

/** An outbox row to be inserted by the statement that stores the call's result. */
export interface HeldEvent {
  id: string;
  dedupeId: string;
  topic: string;
  payloadText: string;
  headersText: string;
}

export const callContext = new AsyncLocalStorage<CallContext>();
