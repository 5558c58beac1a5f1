/**
 * startRelay: delivers committed outbox events to sinks, at least once, always under the event's
 * dedupe id, retrying with backoff until delivered or dead.
 *
 * Shape: one claim loop (claim-events.ts; when and how much: claim-plan.ts) fills up to
 * `concurrency` deliveries (start-delivery.ts) plus a small prefetch queue, taken tenant by tenant
 * (tenant-queue.ts), a key's run one event after another (key-runs.ts); outcomes are settled in
 * batches (outcome-settler.ts); a heartbeat renews the leases of what the relay holds
 * (lease-renewal.ts), queued events for under a second, started ones for leaseMs (lease-plan.ts).
 * A relay that dies simply stops renewing: its queued events are claimable again within a second,
 * its started ones when their lease runs out. Shutdown: relay-shutdown.ts. drainOnce
 * (drain-once.ts) is the same machinery run once, to a deadline.
 *
 * Waking the loop early: `wake()` (wake-signal.ts). The LISTEN wake-up (relay-wakeup.ts) calls
 * it; so may any other early signal of new events.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type pg from 'pg';
import { assertOperatorRole } from '../ops/operator-role.ts';
import { parseOptions } from '../options.ts';
import { type RelayOptions, relayOptionsSchema, type ResolvedRelayOptions } from './relay-options.ts';
import { retryHorizonMs } from './backoff.ts';
import { ClaimPlan } from './claim-plan.ts';
import { DatabaseClock } from './database-clock.ts';
import { KeyRuns, RUN_FOLLOWERS_MAX } from './key-runs.ts';
import { HEARTBEAT_MILLISECONDS, leaseOf, queuedLeaseMs } from './lease-plan.ts';
import { LeaseRenewal } from './lease-renewal.ts';
import { OutcomeSettler } from './outcome-settler.ts';
import { RelayLog } from './relay-log.ts';
import { explainRefusedConnection, ownRelayPool, type RelayDatabase, relayConnectionConfig, timedDatabase } from './relay-pool.ts';
import { shutDownRelay, type RelayParts } from './relay-shutdown.ts';
import { closeSinks, sinksOf, startSinks } from './relay-sinks.ts';
import { type RelaySweeps, startRelaySweeps, stopRelaySweeps } from './relay-sweeps.ts';
import { listenForWakeups } from './relay-wakeup.ts';
import { type Doorbell, doorbellConnectionConfig, startLogicalDoorbell } from './logical-doorbell.ts';
import { reportExhausted } from './report-exhausted.ts';
import type { InFlight } from './run-sink.ts';
import type { Sink } from './sink.ts';
import { type Claim, type ClaimedEvent, claimEvents } from './sql/claim-events.ts';
import { eventKey } from './sql/event-refs.ts';
import { registerRelay, RELAY_SEEN_INTERVAL_MILLISECONDS, relaySeen } from './sql/relay-registry.ts';
import { releaseEvents } from './sql/release-events.ts';
import { type DeliverySetup, deliverySetup, startDelivery } from './start-delivery.ts';
import { TenantQueue } from './tenant-queue.ts';
import { WakeSignal } from './wake-signal.ts';

export interface Relay {
  /** This relay's id, stored in locked_by of the events it is delivering. */
  readonly id: string;
  /** Stops claiming, lets in-flight deliveries finish (up to shutdownTimeoutMs), releases the rest. */
  stop(): Promise<void>;
}

/** After a database error the loop pauses this long before trying again, in milliseconds. */
const ERROR_PAUSE_MILLISECONDS = 1_000;
/**
 * Default batchSize (with 4 x concurrency if larger). The held count is capped by it too, and a
 * claim goes out with a quarter of the prefetch still queued, so with 512 a fast drain claimed
 * about 200 and 300 in turn; 1,024 lets it claim 500-700 per round trip. Only a sink fast enough
 * to start 20,000 deliveries a second gets there: the prefetch is what the slots start in 50 ms.
 */
const DEFAULT_BATCH_SIZE = 1_024;
/** How often the offset between the host clock and the database clock is measured again. */
const CLOCK_SYNC_MILLISECONDS = 60 * 1_000;

/** Rings of the doorbell claim at most this often (or every pollIntervalMs, if shorter), in milliseconds. */
const RING_CLAIM_GAP_MILLISECONDS = 5;

export async function startRelay(options: RelayOptions): Promise<Relay> {
  const resolved = parseOptions(relayOptionsSchema, options, 'relay options');
  const relay = new OutboxRelay(resolved);
  await relay.start();
  return relay;
}

class OutboxRelay implements Relay, RelayParts {
  readonly id = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  readonly options: ResolvedRelayOptions;
  readonly pool: pg.Pool;
  /** The pool, with a client-side timeout on every statement: what all of the relay's SQL runs on. */
  readonly db: RelayDatabase;
  readonly ownsPool: boolean;
  readonly logger: RelayLog;
  readonly sinks: Sink[];
  private readonly delivery: DeliverySetup;
  readonly inFlight = new Map<string, InFlight>();
  /** Claimed and leased, waiting for a delivery slot; taken tenant by tenant in turn. */
  readonly queue = new TenantQueue<ClaimedEvent>();
  /** Claimed and leased, waiting for the event before them in their key (key-runs.ts). */
  readonly runs = new KeyRuns();
  readonly plan: ClaimPlan;
  readonly settler: OutcomeSettler;
  private readonly renewal: LeaseRenewal;
  /** Last events of key runs whose settle, once written, makes the key's next run claimable. */
  private readonly runEnds = new Set<string>();
  /** Where the next claim starts its round of tenants (see claim-events.ts). */
  private lastTenant = '';
  private readonly batchSize: number;
  /** Cut-short events claimed and not finished; while any is held, the loop claims nothing more. */
  private cutShortHeld = 0;
  /** A cut-short event is being delivered, alone. */
  private isolating = false;
  stopping = false;
  private stopped: Promise<void> | undefined;
  loopDone: Promise<void> | undefined;
  private readonly signal = new WakeSignal();
  private doorbell: Doorbell | undefined;
  private ringTimer: NodeJS.Timeout | undefined;
  readonly timers: NodeJS.Timeout[] = [];
  private readonly clock: DatabaseClock;
  readonly closers: (() => Promise<unknown>)[] = [];
  sweeps: RelaySweeps | undefined;
  readonly signalHandler = (signal: NodeJS.Signals) => void this.onSignal(signal);

  constructor(options: ResolvedRelayOptions) {
    this.options = options;
    this.logger = new RelayLog(options.logger, this.id);
    this.ownsPool = options.pool === undefined;
    this.pool = options.pool ?? this.ownPool();
    this.db = timedDatabase(this.pool, options.statementTimeoutMs, {
      named: options.pooler !== 'transaction',
      onMisplaced: (error) =>
        this.logger.warn(
          `a named statement met a pooler in transaction mode (${(error as Error).message}); going on without names. ` +
            "Start the relay with pooler: 'transaction', which also stops its LISTEN (such a pooler delivers no notifications).",
        ),
    });
    this.clock = new DatabaseClock((text) => this.db.query({ text }));
    this.sinks = sinksOf(options.sinks);
    this.batchSize = options.batchSize ?? Math.max(DEFAULT_BATCH_SIZE, options.concurrency * 4);
    this.delivery = deliverySetup(options, this.clock, this.logger);
    this.plan = new ClaimPlan({ ...options, batchSize: this.batchSize });
    this.settler = new OutcomeSettler(this.db, this.id, ERROR_PAUSE_MILLISECONDS, {
      settled: (delivered, failed) => {
        if (this.settler.size === 0) this.pump(); // an isolated delivery may be waiting for this
        // The last event of a key's run is settled: the key's next run is claimable now, not at
        // the next poll (which, for a relay that just went idle, may be a while).
        let runEnded = false;
        if (this.runEnds.size > 0) {
          for (const event of delivered) runEnded = this.runEnds.delete(eventKey(event)) || runEnded;
          for (const event of failed) runEnded = this.runEnds.delete(eventKey(event)) || runEnded;
        }
        if (runEnded) this.wake();
      },
      failed: (error, events) => this.logger.error('settling deliveries failed; retrying', { err: error, events, retryInMs: ERROR_PAUSE_MILLISECONDS }),
    });
    this.renewal = new LeaseRenewal(this.db, this.id, (error, events) => this.logger.warn('renewing leases failed', { err: error, events }));
  }

  async start(): Promise<void> {
    const info = {
      retryHorizonMs: retryHorizonMs(this.options.backoff, this.options.maxAttempts),
      warn: (message: string) => this.logger.warn(message),
    };
    let sweepsStarting: Promise<RelaySweeps | undefined> | undefined;
    try {
      await startSinks(this.sinks, info);
      // Fail fast on a wrong connection string or role, not with a bare "permission denied" at
      // the first poll (or, as the app role under forced RLS, by silently finding nothing). Each
      // statement under the relay's timeouts, as every other.
      const session = {
        query: async (text: string, values?: readonly unknown[]) => ({
          rows: (await this.db.query({ text, values: values ? [...values] : [] })).rows as never[],
        }),
      };
      // The sweeps' scheduler (graphile-worker's runner, on a pool of its own) takes about 30 ms
      // to start on a 2-core machine, as long as everything else here: it starts beside the rest,
      // and the claim loop does not wait for it (startRelay does, at the end). A runner that
      // started while the role check failed is stopped again below.
      sweepsStarting = startRelaySweeps(this.options, this.pool, this.ownsPool ? () => this.ownPool() : undefined, this.logger);
      sweepsStarting.catch(() => {}); // awaited at the end of start(), or below
      await assertOperatorRole(session, 'the relay');
      await this.clock.measure();
      await registerRelay(this.db, this.id, hostname(), process.pid).catch((error: unknown) =>
        this.logger.warn('recording the relay in once.relays failed (run pg-once migrate)', { err: error }),
      );
    } catch (error) {
      await stopRelaySweeps(await sweepsStarting?.catch(() => undefined));
      await closeSinks(this.sinks);
      if (this.ownsPool) await this.pool.end();
      throw this.ownsPool ? explainRefusedConnection(error, this.options.pooler) : error;
    }
    const clientConfig: pg.ClientConfig = this.ownsPool
      ? relayConnectionConfig(this.options.connectionString!, this.options.statementTimeoutMs, this.options.pooler)
      : ((this.pool as pg.Pool & { options: pg.ClientConfig }).options ?? {});
    // Through a transaction-mode pooler a LISTEN lands on some server connection and stays there
    // after the relay's client moved on: nothing would reach the relay. It polls instead.
    if (this.options.pooler !== 'transaction') {
      const wakeup = listenForWakeups(
        clientConfig,
        () => this.wake(),
        (error) => this.logger.warn('wake-up listener failed', { err: error }),
      );
      this.closers.push(() => wakeup.close());
    }
    const doorbell = this.options.wakeup?.logicalReplication;
    if (doorbell) {
      const hooks = { ring: () => this.ring(), log: this.logger, pollIntervalMs: this.options.pollIntervalMs };
      const started = startLogicalDoorbell(doorbellConnectionConfig(clientConfig, doorbell), doorbell, this.db, hooks);
      this.doorbell = started;
      this.closers.push(() => {
        clearTimeout(this.ringTimer);
        return started.close();
      });
    }
    this.every(CLOCK_SYNC_MILLISECONDS, () =>
      this.clock.measure().catch((error: unknown) => this.logger.warn('measuring the database clock failed', { err: error })),
    ).unref();
    this.every(RELAY_SEEN_INTERVAL_MILLISECONDS, () =>
      relaySeen(this.db, this.id).catch((error: unknown) => this.logger.warn("renewing the relay's seen_at failed", { err: error })),
    ).unref();
    this.every(HEARTBEAT_MILLISECONDS, () => {
      this.plan.startRate.tick();
      void this.renew();
    });
    if (this.options.handleSignals) {
      process.once('SIGTERM', this.signalHandler);
      process.once('SIGINT', this.signalHandler);
    }
    this.logger.started(this.options, this.batchSize);
    this.loopDone = this.loop();
    try {
      this.sweeps = await sweepsStarting;
    } catch (error) {
      await this.stop();
      throw this.ownsPool ? explainRefusedConnection(error, this.options.pooler) : error;
    }
    // A stop() while the scheduler was starting could not stop it.
    if (this.stopping) await stopRelaySweeps(this.sweeps);
  }

  stop(): Promise<void> {
    this.stopped ??= shutDownRelay(this);
    return this.stopped;
  }

  /** Ends the loop's wait now: a delivery finished, a settle freed a key, or new events were announced. */
  wake(): void {
    this.signal.wake();
  }

  /**
   * The doorbell rang. A ring claims at once, but no sooner than RING_CLAIM_GAP_MILLISECONDS
   * after the last claim: the rings of a busy stream of commits share claims, so the doorbell
   * makes the relay claim no more often than a busy polling relay does at the default
   * pollIntervalMs (one claim per commit cost a single writer a quarter of its commits on a
   * 2-core server, in CPU alone). A ring while a claim is out is kept for the next wait: that
   * claim may have missed the commit that rang.
   */
  private ring(): void {
    const wait = Math.min(this.options.pollIntervalMs, RING_CLAIM_GAP_MILLISECONDS) - this.plan.msSinceClaim();
    if (wait > 0) {
      this.ringTimer ??= setTimeout(() => {
        this.ringTimer = undefined;
        this.ring();
      }, wait);
      return;
    }
    this.signal.ring();
  }

  /**
   * The wait after a claim that did not fill its room. Holding nothing, with the doorbell
   * streaming, the poll is only the safety net (retries coming due, a ring lost): new events ring.
   */
  private pollWaitMs(holding: boolean): number {
    if (this.doorbell?.slot !== undefined && !holding) return Math.max(this.options.pollIntervalMs, this.options.maxPollIntervalMs);
    return this.plan.pollWaitMs(holding);
  }

  private every(milliseconds: number, tick: () => void): NodeJS.Timeout {
    const timer = setInterval(tick, milliseconds);
    this.timers.push(timer);
    return timer;
  }

  private ownPool(): pg.Pool {
    const { connectionString, statementTimeoutMs, pooler } = this.options;
    return ownRelayPool(connectionString!, statementTimeoutMs, pooler, (message, error) => this.logger.warn(message, { err: error }));
  }

  /** Keeps the delivery slots busy and a small queue ahead of them (claim-plan.ts says when and how much). */
  private async loop(): Promise<void> {
    while (!this.stopping) {
      const step = this.plan.next({
        inFlight: this.inFlight.size,
        queued: this.queue.length,
        following: this.runs.length,
        isolating: this.cutShortHeld > 0,
      });
      if (!('limit' in step)) {
        await this.signal.sleep(step.waitMs);
        continue;
      }
      this.signal.forgetRing(); // this claim sees what rang before it
      let claim: Claim;
      try {
        claim = await claimEvents(this.db, {
          limit: step.limit,
          leaseMs: queuedLeaseMs(this.options.leaseMs),
          relayId: this.id,
          maxAttempts: this.options.maxAttempts,
          after: this.lastTenant,
          runFollowers: RUN_FOLLOWERS_MAX,
        });
      } catch (error) {
        this.logger.error('claiming events failed; retrying', { err: error, retryInMs: ERROR_PAUSE_MILLISECONDS });
        await this.signal.sleep(ERROR_PAUSE_MILLISECONDS);
        continue;
      }
      reportExhausted(this.logger, claim.exhausted);
      const { events, followers, stray } = claim;
      this.lastTenant = claim.lastTenant;
      this.plan.budget.take([...events, ...followers, ...stray].map((event) => event.bytes));
      this.handBack(stray);
      this.cutShortHeld += events.filter((event) => event.cutShort).length;
      this.runs.hold(followers);
      this.queue.push(events);
      this.pump();
      const found = events.length + followers.length + stray.length + claim.exhausted.length;
      if (found > 0) this.plan.busy();
      // A full batch means more may be waiting: claim again as soon as there is room. Otherwise
      // poll again later, or when a delivery finishes (a run going on does not count: what it
      // frees is not claimable until settled, and the settle wakes the loop when that matters).
      if (found < step.limit) await this.signal.sleep(this.pollWaitMs(this.inFlight.size + this.queue.length + this.runs.length > 0));
    }
  }

  /**
   * Gives claimed events back uncounted (a run cut short, a claim's stray followers); they are
   * due at once, and held back only by their key's head. If this fails, their leases run out.
   */
  private handBack(events: readonly ClaimedEvent[]): void {
    if (events.length === 0) return;
    for (const event of events) this.plan.budget.give(event.bytes);
    releaseEvents(this.db, events, this.id).catch((error: unknown) =>
      this.logger.warn('handing back claimed events failed; their leases will expire', { err: error, events: events.length }),
    );
  }

  /**
   * Starts queued deliveries while slots are free. A cut-short event (its previous attempt ended
   * without an outcome, maybe because it crashed the relay) runs alone: it waits for the slots to
   * empty, and nothing starts beside it, so if it is a poison it takes down no other delivery.
   */
  private pump(): void {
    while (this.inFlight.size < this.options.concurrency && this.queue.length > 0 && !this.stopping && !this.isolating) {
      const next = this.queue.peek()!;
      if (next.cutShort) {
        // Outcomes not settled yet count as held too: if this one kills the relay before they
        // are written, those events are delivered again with an attempt lost, and an innocent
        // beside a poison three times is dead with it. The settle pumps again once they are in.
        if (this.inFlight.size > 0 || this.settler.size > 0) return;
        this.isolating = true;
        void this.isolate(this.queue.shift()!);
        return;
      }
      this.deliver(this.queue.shift()!);
    }
  }

  /**
   * Runs a cut-short event with nothing else held: the events still queued are handed back first,
   * uncounted. Attempts are counted at claim, so if this one is a poison that kills the relay, a
   * queued event it took down would lose an attempt without ever starting, and after maxAttempts
   * such crashes be declared dead beside the poison (seen in CI on a loaded machine).
   */
  private async isolate(event: ClaimedEvent): Promise<void> {
    const queued = [...this.queue.drain(), ...this.runs.drain()];
    for (const other of queued) {
      this.plan.budget.give(other.bytes);
      if (other.cutShort) this.cutShortHeld -= 1;
    }
    if (queued.length > 0) {
      await releaseEvents(this.db, queued, this.id).catch((error: unknown) =>
        this.logger.warn('handing back queued events before an isolated delivery failed; their leases will expire', { err: error, events: queued.length }),
      );
    }
    if (this.stopping) {
      // stop() hands back what is queued; this one left the queue, so it goes back here.
      await releaseEvents(this.db, [event], this.id).catch(() => {});
      this.plan.budget.give(event.bytes);
      this.cutShortHeld -= 1;
      this.isolating = false;
      return;
    }
    this.deliver(event);
  }

  private deliver(event: ClaimedEvent): void {
    this.plan.startRate.add();
    /** Its key's run went on: the loop need not wake for this one (see continueRun). */
    let continued = false;
    const entry = startDelivery(this.delivery, event, {
      delivered: () => {
        this.settler.addDelivered(leaseOf(event));
        continued = this.continueRun(event);
      },
      failed: (_, failure) => {
        this.settler.addFailed(failure, leaseOf(event));
        // The rest of its key's run goes back, uncounted: they wait behind this one's backoff.
        this.handBack(this.runs.rest(event));
      },
      done: () => {
        this.inFlight.delete(eventKey(event));
        this.plan.budget.give(event.bytes);
        if (event.cutShort) {
          this.cutShortHeld -= 1;
          this.isolating = false;
        }
        this.settler.settle();
        this.pump();
        if (!continued) this.wake();
      },
    });
    this.inFlight.set(eventKey(event), entry);
  }

  /**
   * After `event` was delivered, its key's next follower (if its run has one) joins the queue,
   * where it waits for a slot in its tenant's turn like any claimed event: a run is never more
   * than one delivery at a time, and takes no slot from other tenants. A follower whose lease
   * ran out (the relay stalled past it) may be another relay's by now: it and the rest of the
   * run go back rather than be delivered on a claim that may no longer be ours.
   */
  private continueRun(event: ClaimedEvent): boolean {
    const next = this.runs.next(event);
    if (next === undefined) {
      if (event.orderingKey !== null) this.runEnds.add(eventKey(event));
      return false;
    }
    if (next.leaseUntil <= Date.now()) {
      this.handBack([next, ...this.runs.rest(next)]);
      return false;
    }
    this.queue.push([next]);
    return true;
  }

  /**
   * Renews the leases about to run out of everything this relay holds: started deliveries for
   * leaseMs; queued events, and outcomes waiting to be settled (a settle that is retrying after an
   * error must not lose its events to another relay), for the short queued lease.
   */
  private async renew(): Promise<void> {
    const { leaseMs } = this.options;
    const queuedMs = queuedLeaseMs(leaseMs);
    await this.renewal.renew([
      { held: [...this.inFlight.values()].map(({ event }) => event), leaseMs },
      { held: this.queue.values(), leaseMs: queuedMs },
      { held: this.runs.values(), leaseMs: queuedMs },
      { held: this.settler.heldLeases(leaseMs, Date.now()), leaseMs: queuedMs },
    ]);
  }

  /** Stops gracefully, then lets the signal do what it would have done without us. */
  private async onSignal(signal: NodeJS.Signals): Promise<void> {
    this.logger.stopping(signal);
    await this.stop();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  }
}
