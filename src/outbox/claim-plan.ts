/**
 * When the relay claims, and how much: enough to keep the delivery slots busy plus a small
 * prefetch queue, within batchSize and the byte budget; and how long an idle relay waits before
 * it polls again. Only arithmetic on what the relay holds: the claim loop (start-relay.ts) acts.
 */
import { ByteBudget } from './byte-budget.ts';
import { StartRate } from './start-rate.ts';

/**
 * The prefetch queue holds what the delivery slots will start in this many milliseconds (at the
 * rate measured over the last second; at least `concurrency`, at most batchSize), and the next
 * claim goes out when a quarter of it is left. Short, because a queued event is one that a newly
 * due event of another tenant waits behind, and one that a dead relay holds for a queued lease.
 */
const PREFETCH_MILLISECONDS = 50;
/** While busy, a claim goes out at least this often (when a quarter of the slots is free), in milliseconds. */
const CLAIM_GAP_MILLISECONDS = 20;
/**
 * An idle relay polls every pollIntervalMs at first, then every this fraction of the time since it
 * last held or found an event (up to maxPollIntervalMs): an event after a quiet spell waits at most
 * a tenth of that spell more than it would have, and a relay idle for long polls every
 * maxPollIntervalMs. At a steady trickle (50 events/s: 20 ms gaps) the interval never leaves
 * pollIntervalMs, so latency under load is unchanged.
 */
const IDLE_POLL_FRACTION = 1 / 10;

/** What the relay holds now, by where it is. */
export interface Holdings {
  inFlight: number;
  /** Claimed, waiting for a slot. */
  queued: number;
  /** Claimed, waiting for the event before them in their key (key-runs.ts). */
  following: number;
  /** A cut-short event is held: it runs alone, so nothing more is claimed meanwhile. */
  isolating: boolean;
}

/** Claim `limit` events now, or wait (`waitMs` undefined: until woken). */
export type ClaimStep = { limit: number } | { waitMs: number | undefined };

export interface ClaimPlanSettings {
  concurrency: number;
  batchSize: number;
  maxHeldBytes: number;
  pollIntervalMs: number;
  maxPollIntervalMs: number;
}

export class ClaimPlan {
  /** Payload and header bytes of the events claimed and not finished. */
  readonly budget: ByteBudget;
  readonly startRate = new StartRate();
  private readonly settings: ClaimPlanSettings;
  /** When the relay last held an event or a claim found one: the idle poll grows from there. */
  private lastBusyAt = 0;
  private lastClaimAt = 0;

  constructor(settings: ClaimPlanSettings) {
    this.settings = settings;
    this.budget = new ByteBudget(settings.maxHeldBytes);
  }

  /** Queued events wanted: what the slots start in PREFETCH_MILLISECONDS, within [concurrency, batchSize]. */
  private get prefetch(): number {
    const wanted = Math.ceil((this.startRate.perSecond * PREFETCH_MILLISECONDS) / 1_000);
    return Math.min(this.settings.batchSize, Math.max(this.settings.concurrency, wanted));
  }

  /**
   * Held at most: the slots plus twice the prefetch (the claim goes out at a quarter of it), and
   * the byte budget at the bytes per event seen so far. A claim goes out when the queue runs low,
   * so that the database round trip overlaps the deliveries instead of alternating with them,
   * and also every CLAIM_GAP_MILLISECONDS while there is some room: a newly due event of a quiet
   * tenant then waits at most that long for a claim (and then for no one: the queue takes
   * tenants in turn), however long the queue is.
   */
  next(held: Holdings): ClaimStep {
    const { concurrency, batchSize } = this.settings;
    const prefetch = this.prefetch;
    const room = Math.min(Math.min(batchSize, concurrency + 2 * prefetch) - held.inFlight - held.queued - held.following, this.budget.room);
    const sinceClaim = Date.now() - this.lastClaimAt;
    const low = held.queued < Math.max(concurrency, prefetch / 4);
    const gap = sinceClaim >= CLAIM_GAP_MILLISECONDS && room >= Math.ceil(concurrency / 4);
    if (room <= 0 || held.isolating || !(low || gap)) {
      // A finishing delivery wakes the loop; so does the claim gap running out, if there is room.
      return { waitMs: room > 0 && !held.isolating ? Math.max(1, CLAIM_GAP_MILLISECONDS - sinceClaim) : undefined };
    }
    this.lastClaimAt = Date.now();
    return { limit: room };
  }

  /** Milliseconds since the last claim went out. */
  msSinceClaim(): number {
    return Date.now() - this.lastClaimAt;
  }

  /** A claim found something (or the relay holds something): the idle poll starts over. */
  busy(): void {
    this.lastBusyAt = Date.now();
  }

  /**
   * How long to wait before polling again after a claim that did not fill its room:
   * pollIntervalMs while the relay holds anything (or has just found something), growing with
   * the time it has been idle (IDLE_POLL_FRACTION) up to maxPollIntervalMs. Writers do not
   * NOTIFY (it serialises their commits), so this poll is what finds a quiet system's next event;
   * a wake-up still ends the wait at once for whoever does notify (requeue).
   */
  pollWaitMs(holding: boolean): number {
    const now = Date.now();
    if (holding) this.lastBusyAt = now;
    const { pollIntervalMs, maxPollIntervalMs } = this.settings;
    return Math.round(Math.min(Math.max(pollIntervalMs, maxPollIntervalMs), Math.max(pollIntervalMs, (now - this.lastBusyAt) * IDLE_POLL_FRACTION)));
  }
}
