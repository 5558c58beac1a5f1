/** An outbox event's primary key, and the two parallel arrays the settle statements unnest. */
export interface EventRef {
  tenantId: string;
  id: string;
}

export function refArrays(events: readonly EventRef[]): [string[], string[]] {
  return [events.map((e) => e.tenantId), events.map((e) => e.id)];
}
