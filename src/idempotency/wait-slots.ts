/**
 * How many connections of one pool may wait for concurrent duplicates at once.
 *
 * A duplicate waits inside its transaction, so it holds a pooled connection for as long as it
 * waits: 30 duplicates of a 4 s call on a pool of 10 left no connection for anyone else, and an
 * unrelated tenant's call queued behind them for 3.7 s. The connection cannot be given back while
 * waiting (it holds the caller's transaction, which `withTenant` opened before the key was known),
 * so the number of waiters is bounded instead: the claim first asks the database, without
 * waiting, whether a claim of the key is in flight (an advisory-lock probe in once.claim_key); only
 * then does the duplicate take a slot here and wait. A duplicate that finds every slot taken
 * answers IdempotencyInProgressError at once (retryable), releasing its connection, so the rest of
 * the pool keeps serving other calls. A client-side semaphore per key was the alternative; it
 * bounds nothing across keys (30 keys with one duplicate each fill the pool as well) and cannot
 * see duplicates in other processes, while the probe counts only real waits.
 *
 * Counted per database handle (a Kysely instance, a pg Pool, a Knex: each is one pool), in this
 * process.
 */

const waiting = new WeakMap<object, number>();

/** Takes a slot if fewer than `max` are taken; returns its release, or undefined. */
export function tryTakeWaitSlot(db: object, max: number): (() => void) | undefined {
  const taken = waiting.get(db) ?? 0;
  if (taken >= max) return undefined;
  waiting.set(db, taken + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    waiting.set(db, (waiting.get(db) ?? 1) - 1);
  };
}
