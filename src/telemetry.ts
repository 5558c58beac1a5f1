/**
 * OpenTelemetry, through @opentelemetry/api only: no-ops unless the application registers an SDK.
 *
 * Spans:   `once.run_idempotent` (attributes once.tenant_id, once.tool, once.key, once.outcome)
 *          `once.deliver`        (once.tenant_id, once.topic, once.event_id, once.dedupe_id,
 *                                 once.attempt, once.outcome)
 * Metrics: `once.calls`             counter, attributes once.outcome (executed | replayed | waited |
 *                                   rejected), once.tool
 *          `once.deliveries`        counter, attributes once.outcome (delivered | retry | dead), once.topic
 *          `once.delivery.latency`  histogram, ms from the event's commit to its delivery, once.topic
 */
import { metrics, type Counter, type Histogram, type MeterProvider, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import packageJson from '../package.json' with { type: 'json' };

const NAME = 'pg-once';

/** Spans go through the API's proxy tracer, which follows whatever provider is registered later. */
export const tracer = trace.getTracer(NAME, packageJson.version);

interface Instruments {
  calls: Counter;
  deliveries: Counter;
  deliveryLatency: Histogram;
}

let cached: { provider: MeterProvider; instruments: Instruments } | undefined;

/**
 * The metrics API has no proxy: instruments made before the application registers its SDK stay
 * no-ops forever. So they are (re)made whenever the global provider changes.
 */
export function instruments(): Instruments {
  const provider = metrics.getMeterProvider();
  if (cached?.provider !== provider) {
    const meter = provider.getMeter(NAME, packageJson.version);
    cached = {
      provider,
      instruments: {
        calls: meter.createCounter('once.calls', { description: 'runIdempotent calls, by outcome' }),
        deliveries: meter.createCounter('once.deliveries', { description: 'Outbox delivery attempts, by outcome' }),
        deliveryLatency: meter.createHistogram('once.delivery.latency', {
          description: 'Time from an outbox event being written to its delivery',
          unit: 'ms',
        }),
      },
    };
  }
  return cached.instruments;
}

/** Ends `span` with the error recorded (coded errors carry their code as an attribute). */
export function endWithError(span: Span, error: unknown): void {
  if (error instanceof Error) {
    span.recordException(error);
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string') span.setAttribute('once.error_code', code);
  }
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  span.end();
}

/**
 * Runs one idempotent call (either mode) inside a `once.run_idempotent` span and counts its
 * outcome: executed, replayed, waited (either, after waiting for a duplicate) or rejected.
 */
export function traceCall<R extends { outcome: 'executed' | 'replayed'; waited: boolean }>(
  attributes: { key: unknown; tool: unknown; mode: 'transaction' | 'external'; tenantId?: unknown },
  run: (span: Span) => Promise<R>,
): Promise<R> {
  return tracer.startActiveSpan('once.run_idempotent', async (span) => {
    const tool = typeof attributes.tool === 'string' ? attributes.tool : '';
    span.setAttributes({
      'once.key': typeof attributes.key === 'string' ? attributes.key.slice(0, 255) : '',
      'once.tool': tool,
      'once.mode': attributes.mode,
      ...(typeof attributes.tenantId === 'string' ? { 'once.tenant_id': attributes.tenantId } : {}),
    });
    try {
      const result = await run(span);
      const outcome = result.waited ? 'waited' : result.outcome;
      span.setAttribute('once.outcome', outcome);
      instruments().calls.add(1, { 'once.outcome': outcome, 'once.tool': tool });
      span.end();
      return result;
    } catch (error) {
      span.setAttribute('once.outcome', 'rejected');
      instruments().calls.add(1, { 'once.outcome': 'rejected', 'once.tool': tool });
      endWithError(span, error);
      throw error;
    }
  });
}
