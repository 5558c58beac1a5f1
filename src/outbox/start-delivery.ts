/**
 * One delivery, for the relay and for drainOnce: the sink call under its timeout, the failure
 * policy (delivery-failure.ts), the log line, the span and the counters. The caller keeps the
 * bookkeeping: what was delivered or failed (to settle it), and what a finished delivery frees.
 */
import type { Attributes } from '@opentelemetry/api';
import { endWithError, instruments, tracer } from '../telemetry.ts';
import { type BackoffOptions, type BackoffPolicy, defaultBackoff } from './backoff.ts';
import type { DatabaseClock } from './database-clock.ts';
import { DeliveryDeadlines } from './delivery-deadlines.ts';
import { deliveryFailure } from './delivery-failure.ts';
import type { RelayLog } from './relay-log.ts';
import { routeTopics, type SinkRouter } from './route-topic.ts';
import { type InFlight, runSink } from './run-sink.ts';
import type { Sink } from './sink.ts';
import type { ClaimedEvent } from './sql/claim-events.ts';
import type { Failure } from './sql/mark-failed.ts';

/** What every delivery of one relay or drain shares. */
export interface DeliverySetup {
  route: SinkRouter;
  clock: DatabaseClock;
  logger: RelayLog;
  backoff: BackoffPolicy;
  maxAttempts: number;
  /** Every delivery's timeout, on one timer. */
  deadlines: DeliveryDeadlines;
}

/** The setup of a relay or a drain, from their (shared) delivery options. */
export function deliverySetup(
  options: { sinks: Record<string, Sink>; backoff: BackoffOptions; maxAttempts: number; deliveryTimeoutMs: number },
  clock: DatabaseClock,
  logger: RelayLog,
): DeliverySetup {
  const { maxAttempts, deliveryTimeoutMs } = options;
  return {
    route: routeTopics(options.sinks),
    clock,
    logger,
    backoff: defaultBackoff(options.backoff),
    maxAttempts,
    deadlines: new DeliveryDeadlines(deliveryTimeoutMs),
  };
}

/** Called in this order; none for an outcome that arrives after the delivery was given up on (`released`). */
export interface DeliveryOutcome {
  delivered(event: ClaimedEvent): void;
  failed(event: ClaimedEvent, failure: Failure): void;
  /** Always, last: the slot is free. */
  done(event: ClaimedEvent): void;
}

/** Topics are few in practice; a bound keeps an unusual application's many from growing the cache forever. */
const MAX_CACHED_TOPICS = 1_000;
/**
 * Metric attributes of the common outcome, made once per topic rather than once per delivery
 * (metrics SDKs read attributes, never change them).
 */
const attributesByTopic = new Map<string, { delivered: Attributes; topic: Attributes }>();
function attributesOf(topic: string): { delivered: Attributes; topic: Attributes } {
  let attributes = attributesByTopic.get(topic);
  if (attributes === undefined) {
    if (attributesByTopic.size >= MAX_CACHED_TOPICS) attributesByTopic.clear();
    attributes = { delivered: { 'once.outcome': 'delivered', 'once.topic': topic }, topic: { 'once.topic': topic } };
    attributesByTopic.set(topic, attributes);
  }
  return attributes;
}

export function startDelivery(context: DeliverySetup, event: ClaimedEvent, outcome: DeliveryOutcome): InFlight {
  const { logger, deadlines } = context;
  const entry: InFlight = { event, controller: new AbortController(), released: false, finished: false };
  deadlines.add(entry);
  const span = tracer.startSpan('once.deliver', {
    attributes: {
      'once.tenant_id': event.tenantId,
      'once.topic': event.topic,
      'once.event_id': event.id,
      'once.dedupe_id': event.dedupeId,
      'once.attempt': event.attempt,
    },
  });
  // One reaction per delivery (no then/finally/catch chain: two promises fewer per event). The
  // outcome is recorded first thing in each branch; telemetry failing after that must not become
  // an unhandled rejection (which ends the process), nor keep the slot from being freed.
  const guarded = (step: () => void) => {
    try {
      step();
    } catch (error) {
      logger.error('recording a delivery outcome failed', { err: error });
    }
  };
  const finish = (record: () => void) => {
    guarded(record);
    deadlines.finished(entry);
    guarded(() => outcome.done(event));
  };
  void runSink(context.route, event, entry.controller.signal, () => context.clock.now()).then(
    () =>
      finish(() => {
        if (entry.released) return void span.end();
        logger.delivered();
        outcome.delivered(event);
        span.setAttribute('once.outcome', 'delivered');
        span.end();
        const telemetry = instruments();
        const attributes = attributesOf(event.topic);
        telemetry.deliveries.add(1, attributes.delivered);
        telemetry.deliveryLatency.record(context.clock.nowMs() - event.createdAt.getTime(), attributes.topic);
      }),
    (error: unknown) =>
      finish(() => {
        if (entry.released) return void endWithError(span, error);
        const failure = deliveryFailure(event, error, context.maxAttempts, context.backoff);
        logger.failed(event, failure, error);
        outcome.failed(event, failure);
        const result = failure.dead ? 'dead' : 'retry';
        span.setAttribute('once.outcome', result);
        endWithError(span, error);
        instruments().deliveries.add(1, { 'once.outcome': result, 'once.topic': event.topic });
      }),
  );
  return entry;
}
