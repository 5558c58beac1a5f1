/**
 * startRelay: delivers committed outbox events to sinks, at least once, always under the event's
 * dedupe id, retrying with backoff until delivered or dead.
 *
 * Shape: one claim loop (claim-events.ts) fills up to `concurrency` deliveries plus a small
 * prefetch queue (what the slots will start in the next PREFETCH_MILLISECONDS); each delivery
 * runs its sink with a timeout; outcomes are settled in batches (mark-delivered.ts,
 * mark-failed.ts); a heartbeat renews the leases of what the relay holds, queued events for
 * under a second, started ones for leaseMs (lease-plan.ts). A relay that dies simply stops
 * renewing: its queued events are claimable again within a second, its started ones when their
 * lease runs out.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Logger, run, type Runner } from 'graphile-worker';
import pg from 'pg';
import { sweep } from '../sweep.ts';
import { endWithError, instruments, tracer } from '../telemetry.ts';
import { SWEEP_TASK, sweepCronItems } from '../sweep-schedule.ts';
import { DeliveryFailedError } from '../errors.ts';
import { assertRelayRole } from '../internal/operator-role.ts';
import { within } from '../internal/within.ts';
import { parseOptions, type RelayOptions, relayOptionsSchema, type ResolvedRelayOptions } from '../options.ts';
import { type BackoffPolicy, defaultBackoff, retryHorizonMs } from './backoff.ts';
import { createRelayPool, explainRefusedConnection, type RelayDatabase, relayConnectionConfig, timedDatabase } from './relay-pool.ts';
import { listenForWakeups, type Wakeup } from './relay-wakeup.ts';
import { type Doorbell, doorbellConnectionConfig, startLogicalDoorbell } from './logical-doorbell.ts';
import { DatabaseClock } from './database-clock.ts';
import { HEARTBEAT_MILLISECONDS, type HeldLease, leaseOf, queuedLeaseMs, renewalsDue } from './lease-plan.ts';
import { StartRate } from './start-rate.ts';
import { TenantQueue } from './tenant-queue.ts';
import { KeyRuns, RUN_FOLLOWERS_MAX } from './key-runs.ts';
import { RelayLog } from './relay-log.ts';
import { routeTopics, type SinkRouter } from './route-topic.ts';
import type { Sink } from './sink.ts';
import { type InFlight, runSink } from './run-sink.ts';
import { deliveryFailure } from './delivery-failure.ts';
import { type Claim, type ClaimedEvent, claimEvents } from './sql/claim-events.ts';
import { eventKey, type LeaseRef } from './sql/event-refs.ts';
import { markDelivered } from './sql/mark-delivered.ts';
import { type Failure, markFailed } from './sql/mark-failed.ts';
import { releaseEvents } from './sql/release-events.ts';
import { registerRelay, RELAY_SEEN_INTERVAL_MILLISECONDS, relaySeen, relayStopped } from './sql/relay-registry.ts';
import { renewLeases } from './sql/renew-leases.ts';

export interface Relay {
  /** This relay's id, stored in locked_by of the events it is delivering. */
  readonly id: string;
  /** Stops claiming, lets in-flight deliveries finish (up to shutdownTimeoutMs), releases the rest. */
  stop(): Promise<void>;
}

/** After a database error the loop pauses this long before trying again, in milliseconds. */
const ERROR_PAUSE_MILLISECONDS = 1_000;
/**
 * The prefetch queue holds what the delivery slots will start in this many milliseconds (at the
 * rate measured over the last second; at least `concurrency`, at most batchSize), and the next
 * claim goes out when half of it is left. Short, because a queued event is one that a newly due
 * event of another tenant waits behind, and one that a dead relay holds for a queued lease.
 */
const PREFETCH_MILLISECONDS = 50;
/** While busy, a claim goes out at least this often (when a quarter of the slots is free), in milliseconds. */
const CLAIM_GAP_MILLISECONDS = 20;
/** Of shutdownTimeoutMs, at most this much (and at most half) is kept for releasing and settling, in milliseconds. */
const SHUTDOWN_CLEANUP_MILLISECONDS = 2_000;
/**
 * Bytes per event assumed before the first claim: the largest payload enqueue accepts, so the
 * first claim cannot overshoot maxHeldBytes however large the events are.
 */
const INITIAL_BYTES_PER_EVENT = 1_048_576;
/** A claim brings at most maxHeldBytes divided by this. */
const CLAIM_SHARE_OF_HELD_BYTES = 4;
/** Floor of the bytes-per-event estimate (a row's own overhead), so tiny events do not mean unbounded counts. */
const MIN_BYTES_PER_EVENT = 256;
/**
 * An idle relay polls every pollIntervalMs at first, then every this fraction of the time since it
 * last held or found an event (up to maxPollIntervalMs): an event after a quiet spell waits at most
 * a tenth of that spell more than it would have, and a relay idle for long polls every
 * maxPollIntervalMs. At a steady trickle (50 events/s: 20 ms gaps) the interval never leaves
 * pollIntervalMs, so latency under load is unchanged.
 */
const IDLE_POLL_FRACTION = 1 / 10;
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


class OutboxRelay implements Relay {
  readonly id = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private readonly options: ResolvedRelayOptions;
  private readonly pool: pg.Pool;
  /** The pool, with a client-side timeout on every statement: what all of the relay's SQL runs on. */
  private readonly db: RelayDatabase;
  private readonly ownsPool: boolean;
  private readonly route: SinkRouter;
  private readonly backoff: BackoffPolicy;
  private readonly logger: RelayLog;
  private readonly inFlight = new Map<string, InFlight>();
  /** Claimed and leased, waiting for a delivery slot; taken tenant by tenant in turn. */
  private readonly queue = new TenantQueue<ClaimedEvent>();
  /** Claimed and leased, waiting for the event before them in their key (key-runs.ts). */
  private readonly runs = new KeyRuns();
  /** When the relay last held an event or a claim found one: the idle poll grows from there. */
  private lastBusyAt = 0;
  /** A key's run ended with a delivery not settled yet: once it is, the key's next run is claimable. */
  private runEndedUnsettled = false;
  /** Where the next claim starts its round of tenants (see claim-events.ts). */
  private lastTenant = '';
  private lastClaimAt = 0;
  /** Payload and header bytes of the events claimed and not finished (queued or in flight). */
  private heldBytes = 0;
  /** Bytes per event, as seen in recent claims: how many events fit in what maxHeldBytes leaves. */
  private bytesPerEvent = INITIAL_BYTES_PER_EVENT;
  private readonly batchSize: number;
  private readonly startRate = new StartRate();
  private delivered: LeaseRef[] = [];
  private failed: Failure[] = [];
  /**
   * Delivered or failed, not settled yet, with the time of the outcome: still leased, renewed
   * while the settle retries, but only for up to leaseMs: a settle that cannot get through for
   * that long lets the lease lapse, and another relay delivers the event again (a duplicate the
   * receiver drops by dedupe id) rather than the event staying held by a relay that is stuck.
   */
  private readonly unsettled = new Map<string, { event: HeldLease; at: number }>();
  private settling: Promise<void> | undefined;
  /** Cut-short events claimed and not finished; while any is held, the loop claims nothing more. */
  private cutShortHeld = 0;
  /** A cut-short event is being delivered, alone. */
  private isolating = false;
  private stopping = false;
  /** Shutdown is over (or out of time): nothing retries any more. */
  private closed = false;
  private renewing = false;
  private stopped: Promise<void> | undefined;
  private loopDone: Promise<void> | undefined;
  private wakeLoop: (() => void) | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private seen: NodeJS.Timeout | undefined;
  private clockSync: NodeJS.Timeout | undefined;
  private readonly clock: DatabaseClock;
  private wakeup: Wakeup | undefined;
  private doorbell: Doorbell | undefined;
  /** The doorbell rang while no wait was on: the next wait ends at once (a claim out may have missed it). */
  private rung = false;
  private ringTimer: NodeJS.Timeout | undefined;
  private worker: Runner | undefined;
  private workerPool: pg.Pool | undefined;
  private readonly signalHandler = (signal: NodeJS.Signals) => void this.onSignal(signal);

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
    this.route = routeTopics(options.sinks);
    this.backoff = defaultBackoff(options.backoff);
    this.batchSize = options.batchSize ?? Math.max(DEFAULT_BATCH_SIZE, options.concurrency * 4);
  }

  async start(): Promise<void> {
    const info = {
      retryHorizonMs: retryHorizonMs(this.options.backoff, this.options.maxAttempts),
      warn: (message: string) => this.logger.warn(message),
    };
    try {
      for (const sink of this.sinks) await sink.start?.(info);
      // Fail fast on a wrong connection string or role, not with a bare "permission denied" at
      // the first poll (or, as the app role under forced RLS, by silently finding nothing). Each
      // statement under the relay's timeouts, as every other.
      const session = { query: async (text: string, values?: readonly unknown[]) => ({ rows: (await this.db.query({ text, values: values ? [...values] : [] })).rows as never[] }) };
      await assertRelayRole(session, 'the relay');
      await this.clock.measure();
      await registerRelay(this.db, this.id, hostname(), process.pid).catch((error: unknown) =>
        this.logger.warn('recording the relay in once.relays failed (run pg-once migrate)', { err: error }),
      );
      this.worker = await this.startSweeps();
    } catch (error) {
      await this.closeSinks();
      await this.workerPool?.end();
      if (this.ownsPool) await this.pool.end();
      throw this.ownsPool ? explainRefusedConnection(error, this.options.pooler) : error;
    }
    const clientConfig: pg.ClientConfig = this.ownsPool
      ? relayConnectionConfig(this.options.connectionString!, this.options.statementTimeoutMs, this.options.pooler)
      : ((this.pool as pg.Pool & { options: pg.ClientConfig }).options ?? {});
    // Through a transaction-mode pooler a LISTEN lands on some server connection and stays there
    // after the relay's client moved on: nothing would reach the relay. It polls instead.
    if (this.options.pooler !== 'transaction') {
      this.wakeup = listenForWakeups(clientConfig, () => this.wake(), (error) => this.logger.warn('wake-up listener failed', { err: error }));
    }
    const doorbell = this.options.wakeup?.logicalReplication;
    if (doorbell) {
      const hooks = { ring: () => this.ring(), log: this.logger, pollIntervalMs: this.options.pollIntervalMs };
      this.doorbell = startLogicalDoorbell(doorbellConnectionConfig(clientConfig, doorbell), doorbell, this.db, hooks);
    }
    this.clockSync = setInterval(() => {
      this.clock.measure().catch((error: unknown) => this.logger.warn('measuring the database clock failed', { err: error }));
    }, CLOCK_SYNC_MILLISECONDS);
    this.clockSync.unref();
    this.seen = setInterval(() => {
      relaySeen(this.db, this.id).catch((error: unknown) => this.logger.warn("renewing the relay's seen_at failed", { err: error }));
    }, RELAY_SEEN_INTERVAL_MILLISECONDS);
    this.seen.unref();
    this.heartbeat = setInterval(() => {
      this.startRate.tick();
      void this.renew();
    }, HEARTBEAT_MILLISECONDS);
    if (this.options.handleSignals) {
      process.once('SIGTERM', this.signalHandler);
      process.once('SIGINT', this.signalHandler);
    }
    this.logger.started(this.options, this.batchSize);
    this.loopDone = this.loop();
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  /** Each sink once, though several patterns may route to it. */
  private get sinks(): Sink[] {
    return [...new Set(Object.values(this.options.sinks))];
  }

  private async closeSinks(): Promise<void> {
    await Promise.all(this.sinks.map((sink) => sink.close?.().catch(() => {})));
  }

  /**
   * A pool of the relay's own, with both error listeners: without them a server restart, or a
   * connection terminated while the pool is ending, is an uncaught exception (README, "Pools").
   */
  private ownPool(): pg.Pool {
    const pool = createRelayPool(this.options.connectionString!, this.options.statementTimeoutMs, this.options.pooler);
    pool.on('error', (error) => this.logger.warn('idle connection failed', { err: error }));
    pool.on('connect', (client) => client.on('error', (error) => this.logger.warn('connection failed', { err: error })));
    return pool;
  }

  /**
   * graphile-worker runs the sweep on its cron: it records each tick in its own tables and adds
   * the job under a job key, so however many relays run, each tick sweeps once.
   */
  private async startSweeps(): Promise<Runner | undefined> {
    const config = this.options.sweep;
    if (config === false) return undefined;
    // graphile-worker gets a pool of its own (its LISTEN connection and job queries must not
    // queue behind deliveries), made here rather than from the connection string so that its
    // connections have the same listeners and settings as the relay's.
    this.workerPool = this.ownsPool ? this.ownPool() : undefined;
    const { schedule, ...sweepOptions } = config;
    const logger = new Logger(() => (level, message) => {
      if (level === 'error') this.logger.error(message, { scope: 'sweeps' });
      else if (level === 'warning') this.logger.warn(message, { scope: 'sweeps' });
    });
    return run({
      pgPool: this.workerPool ?? this.pool,
      concurrency: 1,
      noHandleSignals: true,
      // graphile-worker's own answer to transaction-mode poolers (its LISTEN only costs latency).
      noPreparedStatements: this.options.pooler === 'transaction',
      logger,
      taskList: {
        [SWEEP_TASK]: async () => {
          await sweep(this.pool, sweepOptions);
        },
      },
      parsedCronItems: sweepCronItems(schedule),
    });
  }

  /** Queued events wanted: what the slots start in PREFETCH_MILLISECONDS, within [concurrency, batchSize]. */
  private get prefetch(): number {
    const wanted = Math.ceil((this.startRate.perSecond * PREFETCH_MILLISECONDS) / 1_000);
    return Math.min(this.batchSize, Math.max(this.options.concurrency, wanted));
  }

  /**
   * Keeps the delivery slots busy and a small queue ahead of them. The next claim goes out while
   * the queue still holds a quarter of its target, so the database round trip overlaps the
   * deliveries instead of alternating with them.
   */
  private async loop(): Promise<void> {
    while (!this.stopping) {
      const prefetch = this.prefetch;
      // Held at most: the slots plus twice the prefetch (the claim goes out at a quarter of it),
      // and maxHeldBytes of payloads, at the bytes per event seen so far. One claim brings at
      // most a quarter of maxHeldBytes: its result passes through the driver's buffers and two
      // copies as text before it is parsed, so large claims cost memory twice over (measured:
      // 1 MiB events, 32 MiB held, whole-budget claims peaked at 292 MB RSS, quarter claims 247).
      const byteRoom = Math.min(this.options.maxHeldBytes - this.heldBytes, this.options.maxHeldBytes / CLAIM_SHARE_OF_HELD_BYTES);
      const room = Math.min(
        Math.min(this.batchSize, this.options.concurrency + 2 * prefetch) - this.inFlight.size - this.queue.length - this.runs.length,
        byteRoom <= 0 ? 0 : Math.max(1, Math.floor(byteRoom / this.bytesPerEvent)),
      );
      // Claim when the queue runs low, and also every CLAIM_GAP_MILLISECONDS while there is some
      // room: a newly due event of a quiet tenant then waits at most that long for a claim
      // (and then for no one: the queue takes tenants in turn), however long the queue is.
      const sinceClaim = Date.now() - this.lastClaimAt;
      const low = this.queue.length < Math.max(this.options.concurrency, prefetch / 4);
      const gap = sinceClaim >= CLAIM_GAP_MILLISECONDS && room >= Math.ceil(this.options.concurrency / 4);
      if (room <= 0 || this.cutShortHeld > 0 || !(low || gap)) {
        // A finishing delivery wakes us; so does the claim gap running out, if there is room.
        await this.sleep(room > 0 && this.cutShortHeld === 0 ? Math.max(1, CLAIM_GAP_MILLISECONDS - sinceClaim) : undefined);
        continue;
      }
      this.lastClaimAt = Date.now();
      this.rung = false; // this claim sees what rang before it
      let claim: Claim;
      try {
        claim = await claimEvents(this.db, {
          limit: room,
          leaseMs: queuedLeaseMs(this.options.leaseMs),
          relayId: this.id,
          maxAttempts: this.options.maxAttempts,
          after: this.lastTenant,
          runFollowers: RUN_FOLLOWERS_MAX,
        });
      } catch (error) {
        this.logger.error('claiming events failed; retrying', { err: error, retryInMs: ERROR_PAUSE_MILLISECONDS });
        await this.sleep(ERROR_PAUSE_MILLISECONDS);
        continue;
      }
      for (const event of claim.exhausted) {
        this.logger.exhausted(event);
        instruments().deliveries.add(1, { 'once.outcome': 'dead', 'once.topic': event.topic });
      }
      const { events, followers, stray } = claim;
      this.lastTenant = claim.lastTenant;
      this.holdBytes([...events, ...followers, ...stray]);
      this.handBack(stray);
      this.cutShortHeld += events.filter((event) => event.cutShort).length;
      this.runs.hold(followers);
      this.queue.push(events);
      this.pump();
      const found = events.length + followers.length + stray.length + claim.exhausted.length;
      if (found > 0) this.lastBusyAt = Date.now();
      // A full batch means more may be waiting: claim again as soon as there is room. Otherwise
      // poll again later, or when a delivery finishes (a run going on does not count: what it
      // frees is not claimable until settled, and settle() wakes the loop when that matters).
      if (found < room) await this.sleep(this.pollWaitMs());
    }
  }

  /**
   * How long the loop waits before polling again after a claim that did not fill its room:
   * pollIntervalMs while the relay holds anything (or has just found something), growing with
   * the time it has been idle (IDLE_POLL_FRACTION) up to maxPollIntervalMs. Writers do not
   * NOTIFY (it serialises their commits), so this poll is what finds a quiet system's next event;
   * the LISTEN wake-up still ends the wait at once for whoever does notify (requeue).
   */
  private pollWaitMs(): number {
    const now = Date.now();
    if (this.inFlight.size > 0 || this.queue.length > 0 || this.runs.length > 0) this.lastBusyAt = now;
    const { pollIntervalMs, maxPollIntervalMs } = this.options;
    // Holding nothing, with the doorbell ringing, the poll is only the safety net (retries coming
    // due, a ring lost): new events ring.
    if (this.doorbell?.slot !== undefined && this.lastBusyAt !== now) return Math.max(pollIntervalMs, maxPollIntervalMs);
    return Math.round(Math.min(Math.max(pollIntervalMs, maxPollIntervalMs), Math.max(pollIntervalMs, (now - this.lastBusyAt) * IDLE_POLL_FRACTION)));
  }

  /**
   * Gives claimed events back uncounted (a run cut short, a claim's stray followers); they are
   * due at once, and held back only by their key's head. If this fails, their leases run out.
   */
  private handBack(events: readonly ClaimedEvent[]): void {
    if (events.length === 0) return;
    for (const event of events) this.heldBytes -= event.bytes;
    releaseEvents(this.db, events, this.id).catch((error: unknown) =>
      this.logger.warn('handing back claimed events failed; their leases will expire', { err: error, events: events.length }),
    );
  }

  /**
   * Counts what a claim brought into memory, and learns the bytes per event: at once when events
   * grow (the next claim must not overshoot), by eighths when they shrink. Shrinking slowly
   * bounds nothing more (after a few small claims the estimate is small either way, and the next
   * claim of large events overshoots the same), but by halves a relay starting on small events
   * took a dozen claims of a handful of events each to come down from the first claim's 1 MiB
   * guess: a third of a 20,000-event drain.
   */
  private holdBytes(events: readonly ClaimedEvent[]): void {
    if (events.length === 0) return;
    const bytes = events.reduce((sum, event) => sum + event.bytes, 0);
    this.heldBytes += bytes;
    const average = bytes / events.length;
    this.bytesPerEvent = Math.max(MIN_BYTES_PER_EVENT, average > this.bytesPerEvent ? average : Math.max(average, this.bytesPerEvent / 8));
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
        // beside a poison three times is dead with it. settle() pumps again once they are in.
        if (this.inFlight.size > 0 || this.unsettled.size > 0) return;
        this.isolating = true;
        void this.isolate(this.queue.shift()!);
        return;
      }
      this.deliver(this.queue.shift()!);
      this.startRate.add();
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
      this.heldBytes -= other.bytes;
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
      this.heldBytes -= event.bytes;
      this.cutShortHeld -= 1;
      this.isolating = false;
      return;
    }
    this.deliver(event);
    this.startRate.add();
  }

  private deliver(event: ClaimedEvent): void {
    const key = eventKey(event);
    const controller = new AbortController();
    const entry: InFlight = { event, controller, released: false };
    /** Its key's run went on: the loop need not wake for this one (see continueRun). */
    let continued = false;
    this.inFlight.set(key, entry);
    const timeout = setTimeout(
      () => controller.abort(new DeliveryFailedError(`delivery timed out after ${this.options.deliveryTimeoutMs} ms`)),
      this.options.deliveryTimeoutMs,
    );
    const span = tracer.startSpan('once.deliver', {
      attributes: {
        'once.tenant_id': event.tenantId,
        'once.topic': event.topic,
        'once.event_id': event.id,
        'once.dedupe_id': event.dedupeId,
        'once.attempt': event.attempt,
      },
    });
    void runSink(this.route, event, controller.signal, () => this.clock.now())
      .then(
        () => {
          if (entry.released) return void span.end();
          this.logger.delivered();
          const ref = leaseOf(event);
          this.delivered.push(ref);
          this.unsettled.set(key, { event: ref, at: Date.now() });
          continued = this.continueRun(event);
          span.setAttribute('once.outcome', 'delivered');
          span.end();
          const telemetry = instruments();
          telemetry.deliveries.add(1, { 'once.outcome': 'delivered', 'once.topic': event.topic });
          telemetry.deliveryLatency.record(this.clock.now().getTime() - event.createdAt.getTime(), { 'once.topic': event.topic });
        },
        (error: unknown) => {
          if (entry.released) return void endWithError(span, error);
          const failure = deliveryFailure(event, error, this.options.maxAttempts, this.backoff);
          this.logger.failed(event, failure, error);
          this.failed.push(failure);
          this.unsettled.set(key, { event: leaseOf(event), at: Date.now() });
          // The rest of its key's run goes back, uncounted: they wait behind this one's backoff.
          this.handBack(this.runs.rest(event));
          const outcome = failure.dead ? 'dead' : 'retry';
          span.setAttribute('once.outcome', outcome);
          endWithError(span, error);
          instruments().deliveries.add(1, { 'once.outcome': outcome, 'once.topic': event.topic });
        },
      )
      .finally(() => {
        clearTimeout(timeout);
        this.inFlight.delete(key);
        this.heldBytes -= event.bytes;
        if (event.cutShort) {
          this.cutShortHeld -= 1;
          this.isolating = false;
        }
        this.settle();
        this.pump();
        if (!continued) this.wake();
      })
      // The outcome is recorded first thing in each branch; telemetry failing after that must not
      // become an unhandled rejection (which ends the process).
      .catch((error: unknown) => this.logger.error('recording a delivery outcome failed', { err: error }));
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
      if (event.orderingKey !== null) this.runEndedUnsettled = true;
      return false;
    }
    if (next.leaseUntil <= Date.now()) {
      this.handBack([next, ...this.runs.rest(next)]);
      return false;
    }
    this.queue.push([next]);
    return true;
  }

  /** Writes the gathered outcomes; whatever arrives meanwhile goes in the next statement. */
  private settle(): void {
    this.settling ??= (async () => {
      try {
        // Outcomes that arrive in the same turn of the event loop go in one statement: a run of
        // a key through an instant sink finishes within the turn, and settling its first event
        // alone would cost the run a second round trip before its key's next run is claimable.
        await new Promise((resolve) => setImmediate(resolve));
        while ((this.delivered.length > 0 || this.failed.length > 0) && !this.closed) {
          const delivered = this.delivered;
          const failed = this.failed;
          const runEnded = this.runEndedUnsettled;
          this.delivered = [];
          this.failed = [];
          this.runEndedUnsettled = false;
          try {
            await Promise.all([markDelivered(this.db, delivered, this.id), markFailed(this.db, failed, this.id)]);
            for (const event of [...delivered, ...failed]) this.unsettled.delete(eventKey(event));
            if (this.unsettled.size === 0) this.pump(); // an isolated delivery may be waiting for this
            // The last event of a key's run is settled: the key's next run is claimable now,
            // not at the next poll (which, for a relay that just went idle, may be a while).
            if (runEnded) this.wake();
          } catch (error) {
            this.runEndedUnsettled ||= runEnded;
            // Keep the outcomes and try again: until settled, the events stay leased to us (and
            // if we die now, they are delivered again under the same dedupe id).
            this.delivered.unshift(...delivered);
            this.failed.unshift(...failed);
            this.logger.error('settling deliveries failed; retrying', { err: error, events: delivered.length + failed.length, retryInMs: ERROR_PAUSE_MILLISECONDS });
            await new Promise((resolve) => setTimeout(resolve, ERROR_PAUSE_MILLISECONDS));
          }
        }
      } finally {
        this.settling = undefined;
      }
    })();
  }

  /**
   * Renews the leases about to run out of everything this relay holds: started deliveries for
   * leaseMs; queued events, and outcomes waiting to be settled (a settle that is retrying after an
   * error must not lose its events to another relay), for the short queued lease.
   */
  private async renew(): Promise<void> {
    if (this.renewing) return; // the previous heartbeat's statement is still out
    const now = Date.now();
    const queuedMs = queuedLeaseMs(this.options.leaseMs);
    const renewals = [
      ...renewalsDue([...this.inFlight.values()].map(({ event }) => event), this.options.leaseMs, now),
      ...renewalsDue(this.queue.values(), queuedMs, now),
      ...renewalsDue(this.runs.values(), queuedMs, now),
      ...renewalsDue(
        [...this.unsettled.values()].filter(({ at }) => now - at < this.options.leaseMs).map(({ event }) => event),
        queuedMs,
        now,
      ),
    ];
    if (renewals.length === 0) return;
    this.renewing = true;
    try {
      const sentAt = Date.now();
      const renewed = new Set((await renewLeases(this.db, renewals, this.id)).map(eventKey));
      for (const renewal of renewals) {
        if (renewed.has(eventKey(renewal))) renewal.held.leaseUntil = sentAt + renewal.leaseMs;
      }
    } catch (error) {
      this.logger.warn('renewing leases failed', { err: error, events: renewals.length });
    } finally {
      this.renewing = false;
    }
  }

  private wake(): void {
    this.wakeLoop?.();
  }

  /**
   * The doorbell rang. A ring claims at once, but no sooner than RING_CLAIM_GAP_MILLISECONDS
   * after the last claim: the rings of a busy stream of commits share claims, so the doorbell
   * makes the relay claim no more often than a busy polling relay does at the default
   * pollIntervalMs (one claim per commit cost a single writer a quarter of its commits on a
   * 2-core server, in CPU alone).
   */
  private ring(): void {
    const wait = this.lastClaimAt + Math.min(this.options.pollIntervalMs, RING_CLAIM_GAP_MILLISECONDS) - Date.now();
    if (wait > 0) {
      this.ringTimer ??= setTimeout(() => {
        this.ringTimer = undefined;
        this.ring();
      }, wait);
      return;
    }
    if (this.wakeLoop) this.wake();
    else this.rung = true;
  }

  private sleep(milliseconds?: number): Promise<void> {
    if (this.rung) {
      this.rung = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = milliseconds === undefined ? undefined : setTimeout(done, milliseconds);
      function done() {
        if (timer) clearTimeout(timer);
        resolve();
      }
      this.wakeLoop = () => {
        this.wakeLoop = undefined;
        done();
      };
    });
  }

  /**
   * Returns within shutdownTimeoutMs whatever the network does: every step is bounded by the
   * deadline, and what has not finished by then is left to the leases (queued events are free
   * within a second, abandoned deliveries within leaseMs; both are delivered again under the same
   * dedupe id). In-flight deliveries get the first part of the time, releasing and settling the
   * rest.
   */
  private async shutdown(): Promise<void> {
    const deadline = Date.now() + this.options.shutdownTimeoutMs;
    const deliveriesDeadline = deadline - Math.min(SHUTDOWN_CLEANUP_MILLISECONDS, this.options.shutdownTimeoutMs / 2);
    this.stopping = true;
    this.wake();
    process.removeListener('SIGTERM', this.signalHandler);
    process.removeListener('SIGINT', this.signalHandler);
    await within(this.loopDone, deliveriesDeadline); // a claim may be out; it cannot hold us

    // Let running deliveries finish, within their share of the shutdown timeout.
    while (this.inFlight.size > 0 && Date.now() < deliveriesDeadline) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(20, deliveriesDeadline - Date.now())));
    }
    // Give up on the rest: abort them and hand their events back, uncounted, with the queued ones.
    const abandoned = [...this.inFlight.values()];
    for (const entry of abandoned) {
      entry.released = true;
      entry.controller.abort(new DeliveryFailedError('the relay is shutting down'));
    }
    const unstarted = [...this.queue.drain(), ...this.runs.drain()];
    clearInterval(this.heartbeat);
    clearInterval(this.clockSync);
    clearTimeout(this.ringTimer);
    clearInterval(this.seen);
    const released = abandoned.map(({ event }) => event).concat(unstarted);
    await within(
      releaseEvents(this.db, released, this.id).catch((error: unknown) =>
        this.logger.error('releasing in-flight events failed; their leases will expire instead', { err: error, events: released.length }),
      ),
      deadline,
    );
    this.settle();
    await within(this.settling, deadline);
    await within(
      Promise.all([
        this.wakeup?.close(),
        this.doorbell?.close(),
        this.worker?.stop().catch((error: unknown) => this.logger.error('stopping the sweep scheduler failed', { err: error })),
        this.closeSinks(),
      ]),
      deadline,
    );
    await within(
      relayStopped(this.db, this.id).catch((error: unknown) => this.logger.warn("recording the relay's stop failed", { err: error })),
      deadline,
    );
    this.closed = true; // a settle still retrying gives up: the leases take over
    await within(this.workerPool?.end().catch(() => {}) ?? Promise.resolve(), deadline);
    if (this.ownsPool) await within(this.pool.end().catch(() => {}), deadline);
    this.logger.stopped(released.length);
  }

  /** Stops gracefully, then lets the signal do what it would have done without us. */
  private async onSignal(signal: NodeJS.Signals): Promise<void> {
    this.logger.stopping(signal);
    await this.stop();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  }
}
