/**
 * One call of a sink for one claimed event: what the relay and drainOnce both run per delivery.
 */
import { NoSinkError } from '../errors.ts';
import type { SinkRouter } from './route-topic.ts';
import type { DeliveryEvent, Sink } from './sink.ts';
import type { ClaimedEvent } from './sql/claim-events.ts';

/** A delivery under way, as the relay and drainOnce track it. */
export interface InFlight {
  event: ClaimedEvent;
  controller: AbortController;
  /** Given up on (shutdown, a drain's deadline): its outcome is ignored, its event released. */
  released: boolean;
  /** Its sink call has ended, or been stopped waiting for (delivery-deadlines.ts). */
  finished: boolean;
}

/**
 * Runs the sink the event's topic routes to, but never waits past an abort: a sink that ignores
 * its signal is left behind. Whatever the sink does wrong is a failed attempt, never an escape
 * from the delivery loop: it is called inside an async function, so a synchronous throw becomes a
 * rejection too (a sink `(e) => { if (bad(e)) throw ... }` would otherwise crash the relay on
 * every restart), and a sink that returns something else than a promise simply counts as done.
 * `now`: the database's clock (database-clock.ts), handed to the sink.
 */
export function runSink(route: SinkRouter, event: ClaimedEvent, signal: AbortSignal, now: () => Date): Promise<void> {
  const { attempt } = event;
  const delivery: DeliveryEvent = {
    id: event.id,
    dedupeId: event.dedupeId,
    tenantId: event.tenantId,
    topic: event.topic,
    orderingKey: event.orderingKey,
    payload: event.payload,
    headers: event.headers,
    createdAt: event.createdAt,
  };
  const call = async () => {
    const sink: Sink | undefined = route(event.topic);
    if (!sink) throw new NoSinkError(`no sink is configured for topic "${event.topic}"`);
    await sink(delivery, { attempt, signal, now });
  };
  const aborted = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  aborted.catch(() => {}); // when the sink wins the race, nobody else awaits this one
  return Promise.race([call(), aborted]);
}
