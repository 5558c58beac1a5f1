/**
 * Keeps a failing receiver (or database) from flooding the log: per key (a topic, a message), the
 * first `burst` items of a window are logged as they come; the rest are counted, and when the
 * window ends one line stands for them all, with the latest of them and how many it stands for.
 * A key that keeps failing thus costs one line per window, and no failure goes uncounted: the
 * lines logged plus the suppressed counts add up to every item. A key that goes quiet is
 * forgotten at the end of its window, so the map holds only keys that failed within one.
 *
 * The summary is written by a timer at the end of the window, not by the next item, so a count
 * is never held back until a failure that may not come; flush() writes what is pending at once
 * (the relay's stop).
 */

interface Window<T> {
  /** Items logged in this window. */
  logged: number;
  /** Items counted and not logged since the last line of this key. */
  suppressed: number;
  latest: T | undefined;
  timer: NodeJS.Timeout;
}

export class LogRateLimit<T> {
  private readonly windows = new Map<string, Window<T>>();
  private readonly windowMs: number;
  private readonly burst: number;
  private readonly write: (item: T, suppressed: number) => void;

  /**
   * @param windowMs Length of a window, in milliseconds.
   * @param burst Items of a key logged in full per window, before counting starts.
   * @param write Writes one line: an item as it comes (`suppressed` 0), or at the end of a window the
   *   latest item standing for `suppressed` items that were not logged (itself included).
   */
  constructor(windowMs: number, burst: number, write: (item: T, suppressed: number) => void) {
    this.windowMs = windowMs;
    this.burst = burst;
    this.write = write;
  }

  add(key: string, item: T): void {
    const window = this.windows.get(key);
    if (!window) {
      this.windows.set(key, { logged: 1, suppressed: 0, latest: undefined, timer: this.close(key) });
      this.write(item, 0);
    } else if (window.logged < this.burst) {
      window.logged += 1;
      this.write(item, 0);
    } else {
      window.suppressed += 1;
      window.latest = item;
    }
  }

  /** Writes every pending summary now and forgets all keys. */
  flush(): void {
    for (const window of this.windows.values()) {
      clearTimeout(window.timer);
      if (window.suppressed > 0) this.write(window.latest!, window.suppressed);
    }
    this.windows.clear();
  }

  /**
   * Ends the key's window: a key with suppressed items gets its summary line and a new window in
   * which it logs nothing more (its burst was spent on the failures just summed up, so a key
   * that keeps failing costs one line per window); a key without is forgotten.
   */
  private close(key: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const window = this.windows.get(key)!;
      if (window.suppressed === 0) {
        this.windows.delete(key);
        return;
      }
      const { latest, suppressed } = window;
      this.windows.set(key, { logged: this.burst, suppressed: 0, latest: undefined, timer: this.close(key) });
      this.write(latest!, suppressed);
    }, this.windowMs);
    // A pending summary must not keep a process alive that has nothing else to do.
    timer.unref();
    return timer;
  }
}
