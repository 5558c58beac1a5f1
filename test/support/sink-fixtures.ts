/** What the broker sink tests share: an event, a delivery context, start() info, option issues, a relay and sink wrappers. */
import { randomBytes } from 'node:crypto';
import { expect, vi } from 'vitest';
import { InvalidOptionsError } from '../../src/errors.ts';
import { startRelay, type DeliveryContext, type DeliveryEvent, type Relay, type Sink } from '../../src/index.ts';

/** An event with a fresh dedupe id. */
export const testEvent = (overrides: Partial<DeliveryEvent> = {}): DeliveryEvent => ({
  id: '1',
  dedupeId: `once_${randomBytes(6).toString('hex')}`,
  tenantId: 'tenant-a',
  topic: 'orders.created',
  orderingKey: null,
  payload: { orderId: 42, total: '9.99' },
  headers: {},
  createdAt: new Date('2025-01-02T03:04:05.678Z'),
  ...overrides,
});

export const testContext = () => ({ attempt: 1, signal: new AbortController().signal });

export const testStartInfo = (retryHorizonMs = 60_000) => ({ retryHorizonMs, warn: vi.fn<(message: string) => void>() });

/** The paths of the options `create` refuses with InvalidOptionsError (it must refuse). */
export function optionIssues<O>(create: (options: O) => unknown, options: unknown): string[] {
  try {
    create(options as O);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidOptionsError);
    return (error as InvalidOptionsError).issues.map((issue) => issue.path.join('.'));
  }
  throw new Error('expected InvalidOptionsError');
}

/** A relay delivering every topic to `sink`, with short backoff and many attempts, for broker tests. */
export function startBrokerRelay(connectionString: string, sink: Sink, warnings: string[] = []): Promise<Relay> {
  return startRelay({
    connectionString,
    sinks: { '>': sink },
    concurrency: 4,
    backoff: { initialMs: 20, maxMs: 200 },
    maxAttempts: 50,
    deliveryTimeoutMs: 5_000,
    handleSignals: false,
    logger: { warn: (message: string) => warnings.push(message), error: () => {} },
  });
}

/** `sink`, waiting `delayMs` before each delivery (so a stream is still flowing when a test breaks the broker), counting failed attempts. */
export function pacedSink(sink: Sink, delayMs: number): Sink & { failures(): number } {
  let failures = 0;
  const paced = async (event: DeliveryEvent, context: DeliveryContext) => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    try {
      await sink(event, context);
    } catch (error) {
      failures += 1;
      throw error;
    }
  };
  return Object.assign(paced, { start: sink.start, close: sink.close, failures: () => failures });
}

/** `sink`, delivering every event twice, as a retry after a lost acknowledgement would. */
export function twiceSink(sink: Sink): Sink {
  const twice = async (event: DeliveryEvent, context: DeliveryContext) => {
    await sink(event, context);
    await sink(event, context);
  };
  return Object.assign(twice, { start: sink.start, close: sink.close });
}
