/**
 * How a delivery loop (the relay's, a drain's) waits: for a timeout, or until something wakes it.
 * `wake()` is THE wake hook: finished deliveries, settles, the LISTEN wake-up (relay-wakeup.ts)
 * and any other early signal (a doorbell) call it. A wake with nobody asleep is dropped, not
 * saved: the loop looks at the database after every wait anyway, so a remembered wake would only
 * cost one more empty claim.
 */
export class WakeSignal {
  private waiting: (() => void) | undefined;

  /** Resolves at the next wake(), or after `milliseconds` (never, when undefined). */
  sleep(milliseconds?: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = milliseconds === undefined ? undefined : setTimeout(() => this.wake(), milliseconds);
      this.waiting = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  wake(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }
}
