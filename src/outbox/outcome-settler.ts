/**
 * Writes delivery outcomes, for the relay and for drainOnce: many per statement (the outcomes
 * that arrive while one statement runs go in the next), retried after an error until they are
 * written or the owner closes it.
 *
 * Until written, an outcome's event stays leased to us (renewed by the heartbeat: see
 * heldLeases), so a settle that fails for a while loses nothing; if we die meanwhile, the event
 * is delivered again under the same dedupe id. But only for up to leaseMs: a settle that cannot
 * get through for that long lets the lease lapse, and another relay delivers the event again (a
 * duplicate the receiver drops) rather than the event staying held by a relay that is stuck.
 */
import type { HeldLease } from './lease-plan.ts';
import type { RelayDatabase } from './relay-pool.ts';
import { eventKey, type LeaseRef } from './sql/event-refs.ts';
import { markDelivered } from './sql/mark-delivered.ts';
import { type Failure, markFailed } from './sql/mark-failed.ts';

export interface SettleHooks {
  /** A statement wrote these outcomes. */
  settled(delivered: readonly LeaseRef[], failed: readonly Failure[]): void;
  /** A statement failed; its outcomes are kept and tried again after the pause. */
  failed(error: unknown, events: number): void;
}

export class OutcomeSettler {
  private delivered: HeldLease[] = [];
  private failures: Failure[] = [];
  /** Every outcome not written yet, with when it was known (host clock, epoch ms). */
  private readonly unsettled = new Map<string, { event: HeldLease; at: number }>();
  private running: Promise<void> | undefined;
  /** Set by the owner when it gives up (shutdown, a deadline): no more retries. */
  closed = false;
  private readonly db: RelayDatabase;
  private readonly relayId: string;
  private readonly retryMs: number;
  private readonly hooks: SettleHooks;

  constructor(db: RelayDatabase, relayId: string, retryMs: number, hooks: SettleHooks) {
    this.db = db;
    this.relayId = relayId;
    this.retryMs = retryMs;
    this.hooks = hooks;
  }

  /** Outcomes known and not written. */
  get size(): number {
    return this.unsettled.size;
  }

  /** Outcomes gathered and not yet sent (a statement under way does not count). */
  get waiting(): number {
    return this.delivered.length + this.failures.length;
  }

  /** The settle under way, if any. */
  get settling(): Promise<void> | undefined {
    return this.running;
  }

  addDelivered(event: HeldLease): void {
    this.delivered.push(event);
    this.unsettled.set(eventKey(event), { event, at: Date.now() });
  }

  addFailed(failure: Failure, event: HeldLease): void {
    this.failures.push(failure);
    this.unsettled.set(eventKey(event), { event, at: Date.now() });
  }

  /** The leases the heartbeat keeps alive: outcomes known for less than `leaseMs` (see above). */
  heldLeases(leaseMs: number, now: number): HeldLease[] {
    return [...this.unsettled.values()].filter(({ at }) => now - at < leaseMs).map(({ event }) => event);
  }

  /** Writes what is gathered, unless a settle is under way (it takes what arrives meanwhile). */
  settle(): void {
    if (this.waiting === 0) return;
    this.running ??= this.run();
  }

  private async run(): Promise<void> {
    try {
      // Outcomes that arrive in the same turn of the event loop go in one statement: a run of a
      // key through an instant sink finishes within the turn, and settling its first event alone
      // would cost the run a second round trip before its key's next run is claimable. (Also
      // what keeps `running` from being cleared before `??=` assigns it.)
      await new Promise((resolve) => setImmediate(resolve));
      while (this.waiting > 0 && !this.closed) {
        const delivered = this.delivered;
        const failures = this.failures;
        this.delivered = [];
        this.failures = [];
        try {
          await Promise.all([markDelivered(this.db, delivered, this.relayId), markFailed(this.db, failures, this.relayId)]);
        } catch (error) {
          this.delivered.unshift(...delivered);
          this.failures.unshift(...failures);
          this.hooks.failed(error, delivered.length + failures.length);
          await new Promise((resolve) => setTimeout(resolve, this.retryMs));
          continue;
        }
        for (const event of delivered) this.unsettled.delete(eventKey(event));
        for (const failure of failures) this.unsettled.delete(eventKey(failure));
        this.hooks.settled(delivered, failures);
      }
    } finally {
      this.running = undefined;
    }
  }
}
