/**
 * OpenTelemetry: with an SDK registered (the in-memory exporters), runIdempotent and deliveries
 * emit spans and metrics under the documented names; without one, nothing is needed.
 */
import { metrics, trace } from '@opentelemetry/api';
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { enqueue, IdempotencyKeyReusedError, runIdempotent, startRelay, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';

let fx: AppFixture;
const spans = new InMemorySpanExporter();
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });

beforeAll(async () => {
  fx = await createAppFixture(4);
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
});
afterAll(async () => {
  await fx?.close();
});

async function metricPoints(name: string) {
  await reader.forceFlush();
  const all = metricExporter.getMetrics().flatMap((resource) => resource.scopeMetrics.flatMap((scope) => scope.metrics));
  return all.filter((metric) => metric.descriptor.name === name).at(-1)?.dataPoints ?? [];
}

it('wraps runIdempotent in a span with tenant, tool and outcome, and counts outcomes', async () => {
  const call = (key: string, request: unknown) =>
    withTenant(fx.app, 'otel-tenant', (tx) => runIdempotent(tx, key, async () => 'ok', { tool: 'send_email', request }));
  await call('k1', { a: 1 });
  await call('k1', { a: 1 });
  await expect(call('k1', { a: 2 })).rejects.toBeInstanceOf(IdempotencyKeyReusedError);

  const finished = spans.getFinishedSpans().filter((span) => span.name === 'once.run_idempotent');
  expect(finished.map((span) => span.attributes['once.outcome'])).toEqual(['executed', 'replayed', 'rejected']);
  expect(finished[0]!.attributes).toMatchObject({ 'once.tenant_id': 'otel-tenant', 'once.tool': 'send_email', 'once.key': 'k1' });
  expect(finished[2]!.attributes['once.error_code']).toBe('IDEMPOTENCY_KEY_REUSED');

  const calls = await metricPoints('once.calls');
  const count = (outcome: string) => calls.find((point) => point.attributes['once.outcome'] === outcome)?.value;
  expect([count('executed'), count('replayed'), count('rejected')]).toEqual([1, 1, 1]);
});

it('wraps each delivery in a span and records delivery counts and latency', async () => {
  const relayUrl = await fx.database.createLoginRole('relay');
  await withTenant(fx.app, 'otel-tenant', async (tx) => {
    await enqueue(tx, { topic: 'otel.ok', payload: 1 });
    await enqueue(tx, { topic: 'otel.flaky', payload: 2 });
  });
  let failedOnce = false;
  const relay = await startRelay({
    connectionString: relayUrl,
    handleSignals: false,
    backoff: { initialMs: 5, maxMs: 20 },
    sinks: {
      '>': async (event) => {
        if (event.topic === 'otel.flaky' && !failedOnce) {
          failedOnce = true;
          throw new Error('flaky');
        }
      },
    },
  });
  try {
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 2);
  } finally {
    await relay.stop();
  }
  const deliveries = spans.getFinishedSpans().filter((span) => span.name === 'once.deliver');
  expect(deliveries.map((span) => `${span.attributes['once.topic']}:${span.attributes['once.outcome']}`).sort()).toEqual([
    'otel.flaky:delivered',
    'otel.flaky:retry',
    'otel.ok:delivered',
  ]);
  const counted = await metricPoints('once.deliveries');
  const total = (outcome: string) => counted.filter((p) => p.attributes['once.outcome'] === outcome).reduce((sum, p) => sum + (p.value as number), 0);
  expect([total('delivered'), total('retry'), total('dead')]).toEqual([2, 1, 0]);
  const latency = await metricPoints('once.delivery.latency');
  const histogramCount = latency.reduce((sum, point) => sum + (point.value as { count: number }).count, 0);
  expect(histogramCount).toBe(2);
});
