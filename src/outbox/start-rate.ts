/**
 * Deliveries started per second, over the last second (ten buckets of 100 ms). The relay sizes
 * its prefetch queue with it: enough to keep the slots busy until the next claim returns, and no
 * more, because every queued event is one a dead relay would hold, and one a newly due event of
 * another tenant waits behind.
 */
const BUCKETS = 10;

export class StartRate {
  private readonly buckets = new Array<number>(BUCKETS).fill(0);
  private current = 0;

  /** Counts `count` deliveries started. */
  add(count = 1): void {
    this.buckets[this.current]! += count;
  }

  /** Moves to the next 100 ms bucket; call every 100 ms. */
  tick(): void {
    this.current = (this.current + 1) % BUCKETS;
    this.buckets[this.current] = 0;
  }

  /**
   * Starts per second: over the last second, or over the last complete 100 ms if that is
   * faster. The second alone lags a ramp-up by up to a second (a drain from idle counts its first
   * 100 ms as a rate a tenth of the real one, sizes its claims by it, and so stays slow for most
   * of a short drain); the last bucket follows a rising rate within 100 ms, and the second keeps
   * a rate that falls from dropping the prefetch at once.
   */
  get perSecond(): number {
    const lastComplete = this.buckets[(this.current + BUCKETS - 1) % BUCKETS]!;
    return Math.max(
      this.buckets.reduce((sum, count) => sum + count, 0),
      lastComplete * BUCKETS,
    );
  }
}
