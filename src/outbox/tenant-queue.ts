/**
 * The relay's local queue of claimed events, taken tenant by tenant in turn: a claim returns a
 * tenant's share of a large backlog beside another tenant's one new event, and a FIFO in id order
 * would put that event behind the whole share. Within a tenant, claim order is kept (ordering-key
 * heads only ever come one per key, so no key's order depends on this).
 */
export class TenantQueue<T extends { tenantId: string }> {
  /** Tenants in turn order (a Map iterates in insertion order), each with its events, oldest first. */
  private readonly byTenant = new Map<string, T[]>();
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(items: Iterable<T>): void {
    for (const item of items) {
      const events = this.byTenant.get(item.tenantId);
      if (events) events.push(item);
      else this.byTenant.set(item.tenantId, [item]);
      this.count += 1;
    }
  }

  /** The event shift() would return. */
  peek(): T | undefined {
    for (const events of this.byTenant.values()) return events[0];
    return undefined;
  }

  /** The next tenant's oldest event; that tenant then goes to the back of the turn order. */
  shift(): T | undefined {
    for (const [tenant, events] of this.byTenant) {
      const item = events.shift()!;
      this.byTenant.delete(tenant);
      if (events.length > 0) this.byTenant.set(tenant, events);
      this.count -= 1;
      return item;
    }
    return undefined;
  }

  /** Removes and returns everything. */
  drain(): T[] {
    const all = [...this.values()];
    this.byTenant.clear();
    this.count = 0;
    return all;
  }

  *values(): IterableIterator<T> {
    for (const events of this.byTenant.values()) yield* events;
  }
}
