/**
 * An outbox event's primary key, and the parallel arrays the settle statements unnest.
 *
 * Every statement that takes such arrays reads them through a sub-select, `unnest((SELECT
 * $1::text[]), ...)`: the planner cannot see into an InitPlan, so it estimates the unnest small
 * and joins by the primary key, one probe per event, whatever the arrays hold. With the bare
 * parameters, the first five runs of a named statement on each connection (and every run of an
 * unnamed one: behind a transaction-mode pooler, or a caller's pool) are planned for the actual
 * values: 700 ids, and `locked_by = '<this relay>'` estimated at one row (the statistics never
 * saw this relay's id), made a sequential scan of the whole outbox with a nested loop over the
 * arrays: 150-350 ms per settle instead of 1-2 ms. A 20,000-event drain spent most of its time
 * there (one relay, four connections, five such settles each).
 */
export interface EventRef {
  tenantId: string;
  id: string;
  /**
   * eventKey's answer, made once when the event was claimed and carried along (leaseOf copies
   * it): the relay looks an event up in four Maps over its life, and a key built each time is a
   * new string to allocate and hash each time.
   */
  key?: string;
}

/**
 * One claim of an event: its key and the attempt number the claim gave it. Every statement that
 * settles, renews or releases a claim is fenced by the claim: `locked_by = relay AND attempts =
 * attempt`. The relay id alone is not enough: a relay whose lease lapsed (its renewals failed)
 * can claim the same event again under the same id, and the older delivery must not settle the
 * newer one. attempts grows with every claim, so (locked_by, attempts) names one claim exactly.
 */
export interface LeaseRef extends EventRef {
  attempt: number;
}

export function refArrays(events: readonly EventRef[]): [string[], string[]] {
  return [events.map((e) => e.tenantId), events.map((e) => e.id)];
}

/** tenant ids, event ids, attempts: the three parallel arrays of a fenced statement. */
export function leaseArrays(events: readonly LeaseRef[]): [string[], string[], number[]] {
  return [events.map((e) => e.tenantId), events.map((e) => e.id), events.map((e) => e.attempt)];
}

/** An event's key in a Map: tenant and id (ids are unique only within a tenant). */
export function eventKey(event: EventRef): string {
  return event.key ?? keyOf(event.tenantId, event.id);
}

export function keyOf(tenantId: string, id: string): string {
  return `${tenantId}\u0000${id}`;
}
