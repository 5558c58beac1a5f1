/** An outbox event's primary key, and the two parallel arrays the settle statements unnest. */
export interface EventRef {
  tenantId: string;
  id: string;
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
  return `${event.tenantId}\u0000${event.id}`;
}
