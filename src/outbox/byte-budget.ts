/**
 * How many events the relay or a drain may claim without holding more than maxHeldBytes of
 * payloads and headers (queued or in flight). It learns the bytes per event from what claims
 * bring: at once when events grow (the next claim must not overshoot), by eighths when they
 * shrink. Shrinking slowly bounds nothing more (after a few small claims the estimate is small
 * either way, and the next claim of large events overshoots the same), but by halves a relay
 * starting on small events took a dozen claims of a handful of events each to come down from the
 * first claim's 1 MiB guess: a third of a 20,000-event drain.
 */

/** Assumed before the first claim: the largest payload enqueue accepts, so the first claim cannot overshoot. */
const FIRST_GUESS_BYTES = 1_048_576;
/** The estimate never goes below a row's own overhead, so tiny events do not mean unbounded counts. */
const FLOOR_BYTES = 256;
/**
 * One claim brings at most this share of the budget: its result passes through the driver's
 * buffers and two copies as text before it is parsed, so large claims cost memory twice over
 * (measured: 1 MiB events, 32 MiB held, whole-budget claims peaked at 292 MB RSS, quarter
 * claims 247).
 */
const CLAIM_SHARE = 4;

export class ByteBudget {
  private held = 0;
  private perEvent = FIRST_GUESS_BYTES;
  private readonly limit: number;

  constructor(maxHeldBytes: number) {
    this.limit = maxHeldBytes;
  }

  /** Events the next claim may bring: 0 when the budget is spent, else at least 1 (a single large event still goes). */
  get room(): number {
    const free = Math.min(this.limit - this.held, this.limit / CLAIM_SHARE);
    return free <= 0 ? 0 : Math.max(1, Math.floor(free / this.perEvent));
  }

  take(sizes: readonly number[]): void {
    if (sizes.length === 0) return;
    const total = sizes.reduce((sum, size) => sum + size, 0);
    this.held += total;
    const mean = total / sizes.length;
    this.perEvent = Math.max(FLOOR_BYTES, mean > this.perEvent ? mean : Math.max(mean, this.perEvent / 8));
  }

  give(bytes: number): void {
    this.held -= bytes;
  }
}
