/**
 * How a delivery loop (the relay's, a drain's) waits: for a timeout, or until something wakes it.
 * `wake()` is THE wake hook: finished deliveries, settles, the LISTEN wake-up (relay-wakeup.ts)
 * and any other early signal (a doorbell) call it. A wake with nobody asleep is dropped, not
 * saved: the loop looks at the database after every wait anyway, so a remembered wake would only
 * cost one more empty claim. A doorbell's ring() is the exception: a ring while a claim is out
 * may announce a commit that claim did not see, so it ends the next wait at once.
 */
export class WakeSignal {
  private waiting: (() => void) | undefined;
  private rung = false;

  /** Resolves at the next wake(), or after `milliseconds` (never, when undefined); at once after an unheard ring(). */
  sleep(milliseconds?: number): Promise<void> {
    if (this.rung) {
      this.rung = false;
      return Promise.resolve();
    }
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

  /** Wakes the sleeper, or, with none asleep, makes the next sleep() return at once. */
  ring(): void {
    if (this.waiting) this.wake();
    else this.rung = true;
  }

  /** A claim is going out: it sees whatever rang before it. */
  forgetRing(): void {
    this.rung = false;
  }
}
