/**
 * The heartbeat's statement: renews, for the relay and for drainOnce, the leases about to run out
 * of what they hold (lease-plan.ts says which and for how long). One statement at a time: a
 * heartbeat that finds the previous one still out skips its turn rather than pile up statements
 * on a slow connection.
 */
import { type HeldLease, renewalsDue } from './lease-plan.ts';
import type { RelayDatabase } from './relay-pool.ts';
import { eventKey } from './sql/event-refs.ts';
import { renewLeases } from './sql/renew-leases.ts';

/** Leases held for the same reason, renewed for the same time. */
export interface HeldGroup {
  held: Iterable<HeldLease>;
  leaseMs: number;
}

export class LeaseRenewal {
  private renewing = false;
  private readonly db: RelayDatabase;
  private readonly relayId: string;
  private readonly onError: (error: unknown, events: number) => void;

  constructor(db: RelayDatabase, relayId: string, onError: (error: unknown, events: number) => void) {
    this.db = db;
    this.relayId = relayId;
    this.onError = onError;
  }

  /**
   * Renews what is due among `groups`. A lease is moved on, by the host clock, from when the
   * statement was sent (so early, never late), and only if the statement renewed it: one that
   * lapsed and was claimed again is not ours any more (renew-leases.ts).
   */
  async renew(groups: readonly HeldGroup[]): Promise<void> {
    if (this.renewing) return;
    const now = Date.now();
    const renewals = groups.flatMap(({ held, leaseMs }) => renewalsDue(held, leaseMs, now));
    if (renewals.length === 0) return;
    this.renewing = true;
    try {
      const sentAt = Date.now();
      const renewed = new Map((await renewLeases(this.db, renewals, this.relayId)).map((row) => [eventKey(row), row.tid]));
      for (const renewal of renewals) {
        const tid = renewed.get(eventKey(renewal));
        if (tid === undefined) continue;
        renewal.held.leaseUntil = sentAt + renewal.leaseMs;
        renewal.held.tid = tid;
      }
    } catch (error) {
      this.onError(error, renewals.length);
    } finally {
      this.renewing = false;
    }
  }
}
