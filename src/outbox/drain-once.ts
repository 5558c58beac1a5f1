/**
 * drainOnce: the relay for platforms that cannot keep a process running (a Vercel cron, a Lambda
 * on a schedule). Delivers what is due until a deadline, settles every outcome, hands back what it
 * claimed and did not finish, and returns counts. Nothing is left running: no LISTEN, no timers,
 * and its own pool is ended, so the process can exit (or be frozen) as soon as it returns.
 *
 * Every relay guarantee holds because it IS the relay's claim path: the same claim statement
 * (claim-events.ts: SKIP LOCKED, fair across tenants, one event in flight per ordering key, cut-
 * short events alone, attempts counted at claim), the same leases and heartbeat (lease-plan.ts, lease-renewal.ts),
 * the same batched, fenced settle (outcome-settler.ts) and release statements, the same delivery
 * (start-delivery.ts: sink call, failure policy, telemetry) and byte budget (byte-budget.ts). So any number of drains, and relays, can run at once.
 *
 * Unlike the relay it keeps no prefetch queue (a claim asks only for free delivery slots; a queue
 * holds just the ordering-key heads a claim may bring beyond that), and it does not retry a failed
 * claim: a database error ends the drain, after the usual clean-up, with that error.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type pg from 'pg';
import { DeliveryFailedError } from '../errors.ts';
import { assertOperatorRole } from '../ops/operator-role.ts';
import { within } from '../internal/within.ts';
import { parseOptions } from '../options.ts';
import { retryHorizonMs } from './backoff.ts';
import { ByteBudget } from './byte-budget.ts';
import { DatabaseClock } from './database-clock.ts';
import { type DrainOnceOptions, drainOptionsSchema, type DrainResult, type ResolvedDrainOptions } from './drain-options.ts';
import { HEARTBEAT_MILLISECONDS, leaseOf, queuedLeaseMs } from './lease-plan.ts';
import { LeaseRenewal } from './lease-renewal.ts';
import { OutcomeSettler } from './outcome-settler.ts';
import { RelayLog } from './relay-log.ts';
import { ownRelayPool, type RelayDatabase, timedDatabase } from './relay-pool.ts';
import { closeSinks, sinksOf, startSinks } from './relay-sinks.ts';
import { reportExhausted } from './report-exhausted.ts';
import type { InFlight } from './run-sink.ts';
import type { Sink } from './sink.ts';
import { type ClaimedEvent, claimEvents } from './sql/claim-events.ts';
import { eventKey, type LeaseRef } from './sql/event-refs.ts';
import type { Failure } from './sql/mark-failed.ts';
import { registerRelay } from './sql/relay-registry.ts';
import { releaseEvents } from './sql/release-events.ts';
import { type DeliverySetup, deliverySetup, startDelivery } from './start-delivery.ts';
import { TenantQueue } from './tenant-queue.ts';
import { WakeSignal } from './wake-signal.ts';

/** Of the deadline, this much at the end (at most a quarter of it) is kept for releasing, settling and closing, in milliseconds. */
const CLEANUP_MILLISECONDS = 1_000;
/** After a failed settle, wait this long before trying again, in milliseconds. */
const SETTLE_RETRY_MILLISECONDS = 200;
/**
 * Drains record themselves in once.relays under this one id (seen_at renewed by each), so that
 * `pg-once doctor` sees deliveries happening while a cron runs them, without one row per run.
 */
export const DRAIN_REGISTRY_ID = 'pg-once drain';

/** Delivers what is due before `deadlineMs`, settles it, releases the rest; see DrainOnceOptions. */
export async function drainOnce(options: DrainOnceOptions): Promise<DrainResult> {
  const resolved = parseOptions(drainOptionsSchema, options, 'drainOnce options');
  return new OutboxDrain(resolved).run();
}

class OutboxDrain {
  readonly id = `${hostname()}:${process.pid}:drain:${randomUUID().slice(0, 8)}`;
  private readonly options: ResolvedDrainOptions;
  private readonly logger: RelayLog;
  private readonly pool: pg.Pool;
  private readonly db: RelayDatabase;
  private readonly clock: DatabaseClock;
  private readonly delivery: DeliverySetup;
  private readonly budget: ByteBudget;
  private readonly queue = new TenantQueue<ClaimedEvent>();
  private readonly inFlight = new Map<string, InFlight>();
  private readonly settler: OutcomeSettler;
  private readonly renewal: LeaseRenewal;
  /** Settle statements that succeeded: a claim that ran while one committed may have missed a key's next event. */
  private settledBatches = 0;
  private readonly counts = { delivered: 0, failed: 0, dead: 0, released: 0 };
  private started = 0;
  private lastTenant = '';
  private cutShortHeld = 0;
  private isolation: Promise<void> | undefined;
  private stopReason: DrainResult['reason'] | undefined;
  /** The first database error: the drain ends with it. */
  private error: unknown;
  /** The last error of a settle: the drain ends with it if outcomes are still unwritten at the deadline. */
  private settleError: unknown;
  private readonly signal = new WakeSignal();

  constructor(options: ResolvedDrainOptions) {
    this.options = options;
    this.logger = new RelayLog(options.logger, this.id);
    this.pool =
      options.pool ??
      ownRelayPool(options.connectionString!, options.statementTimeoutMs, options.pooler, (message, error) => this.logger.warn(message, { err: error }));
    this.db = timedDatabase(this.pool, options.statementTimeoutMs, { named: options.pooler !== 'transaction' });
    this.clock = new DatabaseClock((text) => this.db.query({ text }));
    this.delivery = deliverySetup(options, this.clock, this.logger);
    this.budget = new ByteBudget(options.maxHeldBytes);
    this.settler = new OutcomeSettler(this.db, this.id, SETTLE_RETRY_MILLISECONDS, {
      settled: (delivered, failed) => this.record(delivered, failed),
      failed: (error) => {
        this.settleError = error;
        this.logger.error('settling deliveries failed; retrying', { err: error });
      },
    });
    this.renewal = new LeaseRenewal(this.db, this.id, (error) => this.logger.warn('renewing leases failed', { err: error }));
  }

  async run(): Promise<DrainResult> {
    const deadline = Date.now() + this.options.deadlineMs;
    const deliverUntil = deadline - Math.min(CLEANUP_MILLISECONDS, this.options.deadlineMs / 4);
    const sinks = sinksOf(this.options.sinks);
    try {
      const info = { retryHorizonMs: retryHorizonMs(this.options.backoff, this.options.maxAttempts), warn: (message: string) => this.logger.warn(message) };
      await startSinks(sinks, info);
      const session = { query: async (text: string) => ({ rows: (await this.db.query({ text })).rows as never[] }) };
      await assertOperatorRole(session, 'drainOnce');
      await this.clock.measure();
      await registerRelay(this.db, DRAIN_REGISTRY_ID, hostname(), process.pid).catch((error: unknown) =>
        this.logger.warn('recording the drain in once.relays failed (run pg-once migrate)', { err: error }),
      );
    } catch (error) {
      await this.close(sinks, deadline);
      throw error;
    }
    // Not unref'd: while a sink hangs without I/O of its own, these timers are what keeps the
    // process alive until the drain returns. Both are cleared before it does.
    const stopTimer = setTimeout(() => this.stop('deadline'), deliverUntil - Date.now());
    const heartbeat = setInterval(() => void this.renew(), HEARTBEAT_MILLISECONDS);
    const onAbort = () => this.stop('aborted');
    this.options.signal?.addEventListener('abort', onAbort, { once: true });
    if (this.options.signal?.aborted) this.stop('aborted');
    try {
      const looping = this.loop().catch((error: unknown) => {
        this.error ??= error;
        this.stop('aborted');
      });
      // The loop ends at the stop, but a claim may be out: not waited for past half the clean-up time.
      await within(looping, deliverUntil + (deadline - deliverUntil) / 2);
      this.stop('deadline');
      await this.handBack(deadline);
      this.settler.settle();
      await within(this.settler.settling, deadline);
    } finally {
      this.settler.closed = true; // past the deadline: settles stop retrying
      clearTimeout(stopTimer);
      clearInterval(heartbeat);
      this.options.signal?.removeEventListener('abort', onAbort);
      await this.close(sinks, deadline);
    }
    if (this.error !== undefined) throw this.error;
    if (this.settler.waiting > 0) {
      throw (
        this.settleError ??
        new DeliveryFailedError(
          `drainOnce could not record ${this.settler.waiting} outcome(s) before its deadline; their leases will expire and they will be delivered again`,
        )
      );
    }
    return { ...this.counts, reason: this.stopReason ?? 'drained' };
  }

  private stop(reason: DrainResult['reason']): void {
    this.stopReason ??= reason;
    this.signal.wake();
  }

  /** Claims while there are free slots and something is due; returns when the drain should end. */
  private async loop(): Promise<void> {
    for (;;) {
      if (this.stopReason) return;
      const busy = this.inFlight.size + this.queue.length;
      if (this.options.max !== undefined && this.started >= this.options.max && this.inFlight.size === 0) return this.stop('max');
      const limit = this.claimLimit();
      if (limit === 0) {
        await this.signal.sleep();
        continue;
      }
      const settledBefore = this.settledBatches;
      // No key runs (runFollowers 0): a drain delivers a key's head per claim, as it always did;
      // runs need the relay's run bookkeeping (key-runs.ts), which a drain does not keep.
      const claim = await claimEvents(this.db, {
        limit,
        leaseMs: queuedLeaseMs(this.options.leaseMs),
        relayId: this.id,
        maxAttempts: this.options.maxAttempts,
        after: this.lastTenant,
        runFollowers: 0,
      });
      this.lastTenant = claim.lastTenant;
      reportExhausted(this.logger, claim.exhausted);
      this.counts.dead += claim.exhausted.length;
      this.budget.take(claim.events.map((event) => event.bytes));
      this.cutShortHeld += claim.events.filter((event) => event.cutShort).length;
      this.queue.push(claim.events);
      this.pump();
      if (claim.events.length + claim.exhausted.length > 0) continue;
      // Nothing due now. With deliveries still running or outcomes being written, a key's next
      // event becomes claimable when its head is settled: wait for that, then look again.
      if (busy > 0 || this.settler.settling || this.settledBatches !== settledBefore) {
        if (this.settledBatches === settledBefore) await this.signal.sleep();
        continue;
      }
      if (this.options.pollIntervalMs === undefined) return this.stop('drained');
      await this.signal.sleep(this.options.pollIntervalMs);
    }
  }

  /**
   * How many events to claim now (0: wait). Only for free slots, and only once a quarter of them
   * is free (or nothing is held), so a fast sink does not cost a claim per delivery; within `max`
   * and the byte budget. Nothing while a cut-short event is held: it runs alone.
   */
  private claimLimit(): number {
    if (this.cutShortHeld > 0) return 0;
    const { concurrency, max } = this.options;
    const held = this.inFlight.size + this.queue.length;
    const slots = concurrency - held;
    if (slots <= 0 || (held > 0 && slots < Math.ceil(concurrency / 4))) return 0;
    const left = max === undefined ? slots : max - this.started - this.queue.length;
    return Math.max(0, Math.min(slots, left, this.budget.room));
  }

  /** Starts queued deliveries while slots are free; a cut-short event waits for the slots to empty, then runs alone. */
  private pump(): void {
    while (this.inFlight.size < this.options.concurrency && this.queue.length > 0 && !this.stopReason && !this.isolation) {
      if (this.options.max !== undefined && this.started >= this.options.max) return;
      if (this.queue.peek()!.cutShort) {
        if (this.inFlight.size === 0) this.isolation = this.isolate(this.queue.shift()!);
        return;
      }
      this.deliver(this.queue.shift()!);
    }
  }

  /**
   * As the relay does: the events still queued go back first, uncounted, so that if this one is
   * a poison that kills the process, they lose no attempt without having started.
   */
  private async isolate(event: ClaimedEvent): Promise<void> {
    const queued = this.queue.drain();
    for (const other of queued) this.budget.give(other.bytes);
    await this.release(queued);
    if (this.stopReason)
      this.queue.push([event]); // handBack() releases it
    else this.deliver(event);
    this.isolation = undefined;
  }

  private deliver(event: ClaimedEvent): void {
    this.started += 1;
    const entry = startDelivery(this.delivery, event, {
      delivered: () => this.settler.addDelivered(leaseOf(event)),
      failed: (_, failure) => this.settler.addFailed(failure, leaseOf(event)),
      done: () => {
        this.inFlight.delete(eventKey(event));
        this.budget.give(event.bytes);
        if (event.cutShort) this.cutShortHeld -= 1;
        this.settler.settle();
        this.pump();
        this.signal.wake();
      },
    });
    this.inFlight.set(eventKey(event), entry);
  }

  private record(delivered: readonly LeaseRef[], failed: readonly Failure[]): void {
    this.settledBatches += 1;
    this.counts.delivered += delivered.length;
    for (const failure of failed) {
      if (failure.dead) this.counts.dead += 1;
      else this.counts.failed += 1;
    }
    this.signal.wake();
  }

  /**
   * After the loop: deliveries still running are cut (aborted, their outcome ignored) and, with
   * what was claimed and never started, handed back uncounted, due at once: the drain ran out of
   * time, the events did not fail. A claim still out when the deadline came is not waited for
   * past it: its events are leased for the short queued lease only.
   */
  private async handBack(deadline: number): Promise<void> {
    await within(this.isolation, deadline);
    const cut = [...this.inFlight.values()];
    for (const delivery of cut) {
      delivery.released = true;
      delivery.controller.abort(new DeliveryFailedError('the drain reached its deadline'));
    }
    await within(this.release([...cut.map(({ event }) => event), ...this.queue.drain()]), deadline);
  }

  private async release(events: readonly ClaimedEvent[]): Promise<void> {
    if (events.length === 0) return;
    try {
      await releaseEvents(this.db, events, this.id);
      this.counts.released += events.length;
    } catch (error) {
      this.error ??= error;
      this.logger.error('releasing events failed; their leases will expire instead', { err: error });
    }
  }

  /**
   * The heartbeat: started deliveries renewed for leaseMs; queued events and outcomes waiting to
   * be written, for the short queued lease (lease-plan.ts).
   */
  private async renew(): Promise<void> {
    const { leaseMs } = this.options;
    const queuedMs = queuedLeaseMs(leaseMs);
    await this.renewal.renew([
      { held: [...this.inFlight.values()].map(({ event }) => event), leaseMs },
      { held: this.queue.values(), leaseMs: queuedMs },
      { held: this.settler.heldLeases(leaseMs, Date.now()), leaseMs: queuedMs },
    ]);
  }

  private async close(sinks: readonly Sink[], deadline: number): Promise<void> {
    await within(closeSinks(sinks), deadline);
    if (!this.options.pool)
      await within(
        this.pool.end().catch(() => {}),
        deadline,
      );
  }
}
