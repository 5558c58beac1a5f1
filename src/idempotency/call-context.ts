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
}

export const callContext = new AsyncLocalStorage<CallContext>();
