/**
 * The database's clock as seen from the relay host. A relay host whose clock is off (a VM after
 * suspend, a container without NTP) would otherwise stamp deliveries with a wrong time: a webhook
 * receiver that checks `webhook-timestamp` against its own clock (Standard Webhooks allows a few
 * minutes) would reject every delivery of that relay, forever. The database's clock is the one
 * every relay shares and the one created_at was written with, so sinks take their "now" from it.
 *
 * Measured the NTP way: read `clock_timestamp()` (the server's wall clock at that instant, not the
 * transaction start that now() returns) between two readings of the host clock, and assume the
 * server read it half-way through the round trip; the error is at most half the round trip, so of
 * a few samples the one with the shortest round trip wins. Re-measured periodically: clocks drift.
 */
import type pg from 'pg';

/** Samples per measurement; the one with the shortest round trip is kept. */
const SAMPLES = 3;

export class DatabaseClock {
  private offsetMs = 0;
  /** Half the round trip of the sample in use: the most the offset can be wrong by, in milliseconds. */
  private errorMs = Number.POSITIVE_INFINITY;

  /**
   * @param query runs the clock statement (the relay passes its pool, with its timeouts).
   * @param hostNow the host clock, in epoch milliseconds (a parameter so tests can skew it).
   */
  private readonly query: (text: string) => Promise<pg.QueryResult<{ ms: number }>>;
  private readonly hostNow: () => number;

  constructor(query: (text: string) => Promise<pg.QueryResult<{ ms: number }>>, hostNow: () => number = Date.now) {
    this.query = query;
    this.hostNow = hostNow;
  }

  /** Database time minus host time, in milliseconds (positive: the host is behind). */
  get offset(): number {
    return this.offsetMs;
  }

  /** How far off the offset may be, in milliseconds (half the best round trip). */
  get uncertainty(): number {
    return this.errorMs;
  }

  /** The database's clock, now. */
  now(): Date {
    return new Date(this.nowMs());
  }

  /** The database's clock, now, in epoch milliseconds. */
  nowMs(): number {
    return this.hostNow() + this.offsetMs;
  }

  async measure(): Promise<void> {
    let best: { offset: number; error: number } | undefined;
    for (let sample = 0; sample < SAMPLES; sample += 1) {
      const sent = this.hostNow();
      const { rows } = await this.query('SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS ms');
      const received = this.hostNow();
      const error = (received - sent) / 2;
      if (!best || error < best.error) best = { offset: rows[0]!.ms - (sent + error), error };
    }
    this.offsetMs = Math.round(best!.offset);
    this.errorMs = best!.error;
  }
}
