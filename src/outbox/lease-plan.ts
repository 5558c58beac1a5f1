/**
 * How long the relay leases what it holds, and when it renews. Two leases, so that a relay that
 * dies (SIGKILL, lost host) holds only what it was really delivering:
 * - claimed but not started (the local prefetch queue): QUEUED_LEASE_MILLISECONDS, under a second,
 *   so another relay can take them within a second of the death;
 * - started deliveries: `leaseMs`, long enough for a slow receiver.
 * A live relay renews a lease when it would run out within RENEW_AHEAD_MILLISECONDS, so a fast
 * delivery (the common case) is claimed once and settled once, and never renewed at all: renewals
 * cost writes only for events that are held a while.
 */
import type { LeaseRef } from './sql/event-refs.ts';

/** Lease of an event claimed and not started yet, in milliseconds. */
export const QUEUED_LEASE_MILLISECONDS = 750;
/** The heartbeat looks for leases to renew this often, in milliseconds. */
export const HEARTBEAT_MILLISECONDS = 100;
/**
 * A lease is renewed once it has less than this left, in milliseconds: several heartbeats plus a
 * slow round trip, so that a live relay's leases never lapse.
 */
export const RENEW_AHEAD_MILLISECONDS = 400;

/** An event the relay holds: its claim, and when its lease runs out by the relay's clock. */
export interface HeldLease extends LeaseRef {
  /** Host-clock epoch milliseconds; computed from the moment the statement was SENT, so early. */
  leaseUntil: number;
  /**
   * Where the row version our last claim or renewal wrote lies (its ctid, as text), so the settle
   * finds it without a primary-key descent (mark-delivered.ts). Only a hint: anything else that
   * updates the row moves it, and a settle that misses falls back to the primary key.
   */
  tid?: string;
}

/** A held lease to renew, and for how long. */
export interface Renewal extends LeaseRef {
  leaseMs: number;
  held: HeldLease;
}

/** The renewals due now among `held`, each renewed for `leaseMs`. */
export function renewalsDue(held: Iterable<HeldLease>, leaseMs: number, now: number): Renewal[] {
  const due: Renewal[] = [];
  for (const lease of held) {
    if (lease.leaseUntil - now < RENEW_AHEAD_MILLISECONDS) {
      due.push({ tenantId: lease.tenantId, id: lease.id, attempt: lease.attempt, leaseMs, held: lease });
    }
  }
  return due;
}

/** The lease of events claimed and not started, given the relay's own `leaseMs`. */
export function queuedLeaseMs(leaseMs: number): number {
  return Math.min(leaseMs, QUEUED_LEASE_MILLISECONDS);
}

/** What is kept of an event once its delivery is over: the claim, not the payload. */
export function leaseOf(event: HeldLease): HeldLease {
  return { tenantId: event.tenantId, id: event.id, key: event.key, attempt: event.attempt, leaseUntil: event.leaseUntil, tid: event.tid };
}
