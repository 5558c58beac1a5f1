/**
 * The followers of the key runs a relay holds: for each ordering key whose head it claimed with a
 * run (see claim-events.ts), the events after the head, in commit order, claimed and leased,
 * waiting for the event before them to be delivered.
 *
 * Why runs: without them a key delivers one event per claim-and-settle round trip (about 60/s),
 * because the next event of a key is claimable only once the head's outcome is committed. A run
 * keeps the one-at-a-time rule inside the relay instead: the next follower starts only after the
 * event before it succeeded, so the key still has at most one event in flight and commit order
 * holds; outcomes are settled in batches as usual. On a failure (or anything else that ends the
 * run: shutdown, an isolated delivery, a lease that lapsed) the followers are handed back
 * uncounted, and the failed head holds the key back, with its backoff, as it would have anyway.
 */
import type { ClaimedEvent } from './sql/claim-events.ts';

/** Followers one key's run may bring per claim: bounds what a failure hands back and one key holds. */
export const RUN_FOLLOWERS_MAX = 63;

export function orderingKeyOf(event: { tenantId: string; orderingKey: string | null }): string {
  return `${event.tenantId}\u0000${event.orderingKey}`;
}

export class KeyRuns {
  private readonly byKey = new Map<string, ClaimedEvent[]>();
  private count = 0;

  /** Followers held, over all keys. */
  get length(): number {
    return this.count;
  }

  /** Adds a claim's followers (in id order, each right after the one before it in its key). */
  hold(followers: readonly ClaimedEvent[]): void {
    for (const event of followers) {
      const key = orderingKeyOf(event);
      const run = this.byKey.get(key);
      if (run) run.push(event);
      else this.byKey.set(key, [event]);
      this.count += 1;
    }
  }

  /** The follower that comes after `event` (just delivered), taken out; undefined at a run's end. */
  next(event: ClaimedEvent): ClaimedEvent | undefined {
    if (event.orderingKey === null) return undefined;
    const key = orderingKeyOf(event);
    const run = this.byKey.get(key);
    if (!run) return undefined;
    const next = run.shift()!;
    if (run.length === 0) this.byKey.delete(key);
    this.count -= 1;
    return next;
  }

  /** What is left of the run of `event`'s key, taken out (to hand back). */
  rest(event: ClaimedEvent): ClaimedEvent[] {
    if (event.orderingKey === null) return [];
    const key = orderingKeyOf(event);
    const run = this.byKey.get(key) ?? [];
    this.byKey.delete(key);
    this.count -= run.length;
    return run;
  }

  /** Every follower, taken out. */
  drain(): ClaimedEvent[] {
    const all = [...this.values()];
    this.byKey.clear();
    this.count = 0;
    return all;
  }

  *values(): IterableIterator<ClaimedEvent> {
    for (const run of this.byKey.values()) yield* run;
  }
}
