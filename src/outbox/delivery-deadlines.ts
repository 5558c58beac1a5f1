/**
 * The deliveries' timeouts, on one timer per relay (or drain) instead of one per delivery.
 *
 * Every delivery of a relay has the same timeout, so deadlines come due in the order deliveries
 * started: a queue in start order, and one timer armed for its oldest unfinished entry, fire each
 * timeout exactly when a timer of its own would have. A timer per delivery cost a drain about
 * 1 us of the relay's CPU per event (creating, inserting and unlinking 20,000 timers, and their
 * garbage), on the path the drain bench measures.
 *
 * Entries are dropped as they finish when they are at the front (deliveries mostly finish in the
 * order they started), and the queue is compacted when finished entries behind a slow one
 * outnumber the live ones, so it stays near `concurrency` entries whatever a sink does. The
 * timer is cleared when nothing is left, so a stopped relay leaves nothing keeping Node alive.
 */
import { DeliveryFailedError } from '../errors.ts';

/** What the queue aborts: a delivery's controller, and whether the delivery has finished. */
export interface Deadline {
  controller: AbortController;
  finished: boolean;
}

/** Compact when finished entries outnumber live ones by this much (and by this factor). */
const COMPACT_SLACK = 64;

export class DeliveryDeadlines {
  private entries: { deadline: Deadline; at: number }[] = [];
  private head = 0;
  private live = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly timeoutMs: number;

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
  }

  /** Entries held, finished ones behind a live one included (for tests). */
  get size(): number {
    return this.entries.length - this.head;
  }

  /** A delivery started now: it is aborted (DeliveryFailedError) if it has not finished by the timeout. */
  add(deadline: Deadline): void {
    this.entries.push({ deadline, at: performance.now() + this.timeoutMs });
    this.live += 1;
    this.timer ??= setTimeout(this.fire, this.timeoutMs);
  }

  /** The delivery finished (whichever way): its deadline no longer counts. */
  finished(deadline: Deadline): void {
    if (deadline.finished) return;
    deadline.finished = true;
    this.live -= 1;
    this.dropFinished();
    if (this.live === 0) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.entries = [];
      this.head = 0;
    } else if (this.entries.length - this.head > 2 * this.live + COMPACT_SLACK) {
      this.entries = this.entries.slice(this.head).filter(({ deadline }) => !deadline.finished);
      this.head = 0;
    }
  }

  private dropFinished(): void {
    while (this.head < this.entries.length && this.entries[this.head]!.deadline.finished) this.head += 1;
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    const now = performance.now();
    for (;;) {
      this.dropFinished();
      const next = this.entries[this.head];
      if (next === undefined) return;
      if (next.at > now) {
        this.timer = setTimeout(this.fire, Math.ceil(next.at - now));
        return;
      }
      this.head += 1;
      // Its delivery finishes through the abort (runSink stops waiting for it) and calls finished().
      next.deadline.controller.abort(new DeliveryFailedError(`delivery timed out after ${this.timeoutMs} ms`));
    }
  };
}
