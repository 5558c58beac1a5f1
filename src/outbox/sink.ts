/**
 * The one interface between the relay and the outside world. A sink is a function that delivers
 * one event and resolves when the receiver has it; throwing means "retry later" (see
 * DeliveryFailedError for a retry-after hint, DeliveryRejectedError for "never"). Built-in sinks
 * (HTTP, NATS JetStream) are thin shims over this; so is any user function.
 */

/** An outbox event as a sink receives it. */
export interface DeliveryEvent {
  /** The outbox row's id (a bigint, as a string). */
  id: string;
  /** What the receiver dedupes on: the same on every attempt, and on re-executions of the call. */
  dedupeId: string;
  tenantId: string;
  topic: string;
  orderingKey: string | null;
  payload: unknown;
  headers: Record<string, string>;
  createdAt: Date;
}

export interface DeliveryContext {
  /** 1 on the first attempt, then 2, 3, ... (counted across relays and restarts). */
  attempt: number;
  /** Aborted when the delivery times out or the relay shuts down: stop and throw. */
  signal: AbortSignal;
  /**
   * The database's clock, as the relay sees it: use it, not `new Date()`, for any timestamp the
   * receiver checks (a webhook's `webhook-timestamp`), so a relay host with a skewed clock is
   * harmless. The relay measures the offset between its host and the database (`SELECT
   * clock_timestamp()`, corrected by half the round trip; the best of 3 samples) at start and
   * every minute after, and applies it to the host clock; accurate to about half a round trip.
   * Optional in the type so that sinks can be called by other code (`context.now?.()`).
   */
  now?(): Date;
}

/** What the relay tells a sink when it starts. */
export interface SinkStartInfo {
  /**
   * The longest time, in milliseconds, between an event's first attempt and its last: a receiver
   * that dedupes only within a window (JetStream) must keep ids at least this long.
   */
  retryHorizonMs: number;
  /** Where a sink reports warnings. */
  warn(message: string): void;
}

export interface Sink {
  (event: DeliveryEvent, context: DeliveryContext): Promise<void>;
  /** Called once before the first delivery (connect, check configuration). Throwing stops the relay's start. */
  start?(info: SinkStartInfo): Promise<void>;
  /** Called once on shutdown, after the last delivery. */
  close?(): Promise<void>;
}

/**
 * The JSON body built-in sinks send, in the Standard Webhooks shape (`type`, `timestamp`,
 * `data`), plus the dedupe id so a receiver that only sees the body can still dedupe.
 */
export function eventEnvelope(event: DeliveryEvent): { id: string; type: string; timestamp: string; data: unknown } {
  return { id: event.dedupeId, type: event.topic, timestamp: event.createdAt.toISOString(), data: event.payload };
}
