/**
 * natsSink against a real NATS server with JetStream (NATS_URL, default 127.0.0.1:4222): JetStream
 * dedupes on the dedupe id, what is stored, routing, the duplicate_window check in start(), and
 * coded errors. Each test publishes into a stream of its own, deleted afterwards.
 *
 * Without a server the suite is skipped, unless CI or ONCE_REQUIRE_SERVICES is set: then it fails,
 * so a CI run cannot go green by silently testing nothing.
 */
import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { DeliveryFailedError, DeliveryRejectedError, InvalidOptionsError, SinkMisconfiguredError } from '../src/errors.ts';
import { eventEnvelope, type Sink } from '../src/outbox/sink.ts';
import { natsSink, type NatsSinkOptions } from '../src/outbox/sinks/nats-sink.ts';
import { errorOf } from './support/error-of.ts';
import { NATS_URL, natsAvailable, natsRequired } from './support/nats.ts';
import { testContext as context, testEvent as event } from './support/sink-fixtures.ts';

const required = natsRequired;
const available = natsAvailable;

const NANOSECONDS_PER_MILLISECOND = 1_000_000;
const MINUTE_MILLISECONDS = 60 * 1_000;

const startInfo = (retryHorizonMs: number) => ({ retryHorizonMs, warn: vi.fn<(message: string) => void>() });

describe.skipIf(!available && !required)('natsSink (real NATS JetStream)', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const streams: string[] = [];
  const sinks: Sink[] = [];

  beforeAll(async () => {
    if (!available) {
      throw new Error(
        `NATS is not reachable at ${NATS_URL}, and CI/ONCE_REQUIRE_SERVICES requires it: start one with ` +
          '`docker compose up -d nats` (or nats-server -js), or set NATS_URL.',
      );
    }
    nc = await connect({ servers: NATS_URL });
    jsm = await jetstreamManager(nc);
  });
  afterEach(async () => {
    await Promise.all(sinks.splice(0).map((sink) => sink.close?.()));
    await Promise.all(streams.splice(0).map((name) => jsm.streams.delete(name)));
  });
  afterAll(async () => {
    await nc?.close();
  });

  /** A stream of its own storing `<prefix>.>`, with the given duplicate window. */
  async function createStream(duplicateWindowMs = 2 * MINUTE_MILLISECONDS) {
    const id = randomBytes(6).toString('hex');
    const name = `once_test_${id}`;
    const prefix = `once.test.${id}`;
    await jsm.streams.add({
      name,
      subjects: [`${prefix}.>`],
      duplicate_window: duplicateWindowMs * NANOSECONDS_PER_MILLISECOND,
    });
    streams.push(name);
    return { name, prefix, messages: async () => (await jsm.streams.info(name)).state.messages };
  }

  function sink(options: Partial<NatsSinkOptions> & Pick<NatsSinkOptions, 'subject'>): Sink {
    const created = natsSink({ servers: NATS_URL, ...options });
    sinks.push(created);
    return created;
  }

  it('stores an event delivered three times once: JetStream dedupes on the dedupe id', async () => {
    const stream = await createStream();
    const deliver = sink({ subject: `${stream.prefix}.orders` });
    const once = event();

    for (let attempt = 1; attempt <= 3; attempt++) await deliver(once, { ...context(), attempt });

    expect(await stream.messages()).toBe(1);
    // The sink used the dedupe id as Nats-Msg-Id: another publish with it is acked as a duplicate.
    const ack = await jetstream(nc).publish(`${stream.prefix}.orders`, 'again', { msgID: once.dedupeId });
    expect(ack).toMatchObject({ stream: stream.name, seq: 1, duplicate: true });
    expect(await stream.messages()).toBe(1);
  });

  it('stores different dedupe ids separately, as the envelope JSON with Nats-Msg-Id and the event headers', async () => {
    const stream = await createStream();
    const deliver = sink({ subject: `${stream.prefix}.orders` });
    const first = event({ headers: { 'x-trace-id': 'trace-1' } });
    const second = event({ id: '2', payload: { orderId: 43 } });

    await deliver(first, context());
    await deliver(second, context());

    expect(await stream.messages()).toBe(2);
    const stored = await jsm.streams.getMessage(stream.name, { seq: 1 });
    expect(stored?.subject).toBe(`${stream.prefix}.orders`);
    expect(stored?.json()).toEqual(JSON.parse(JSON.stringify(eventEnvelope(first))));
    expect(stored?.json()).toEqual({
      id: first.dedupeId,
      type: 'orders.created',
      timestamp: '2025-01-02T03:04:05.678Z',
      data: { orderId: 42, total: '9.99' },
    });
    expect(stored?.header.get('Nats-Msg-Id')).toBe(first.dedupeId);
    expect(stored?.header.get('x-trace-id')).toBe('trace-1');
    const storedSecond = await jsm.streams.getMessage(stream.name, { seq: 2 });
    expect(storedSecond?.header.get('Nats-Msg-Id')).toBe(second.dedupeId);
    expect(storedSecond?.json()).toMatchObject({ id: second.dedupeId, data: { orderId: 43 } });
  });

  it('routes by topic when subject is a function', async () => {
    const stream = await createStream();
    const deliver = sink({ subject: (e) => `${stream.prefix}.${e.topic}` });

    await deliver(event({ topic: 'orders.created' }), context());
    await deliver(event({ topic: 'orders.paid' }), context());

    const subjects = await Promise.all([1, 2].map(async (seq) => (await jsm.streams.getMessage(stream.name, { seq }))?.subject));
    expect(subjects).toEqual([`${stream.prefix}.orders.created`, `${stream.prefix}.orders.paid`]);
  });

  it('start() warns once when the relay retries for longer than the duplicate_window', async () => {
    const stream = await createStream(1_000);
    const info = startInfo(10 * MINUTE_MILLISECONDS);

    await sink({ subject: `${stream.prefix}.orders` }).start?.(info);

    expect(info.warn).toHaveBeenCalledTimes(1);
    const message = info.warn.mock.calls[0]?.[0];
    expect(message).toContain('duplicate_window');
    expect(message).toContain(stream.name);
  });

  it("start() refuses a short duplicate_window with duplicateWindowCheck: 'refuse'", async () => {
    const stream = await createStream(1_000);
    const info = startInfo(10 * MINUTE_MILLISECONDS);

    const error = await errorOf(sink({ subject: `${stream.prefix}.orders`, duplicateWindowCheck: 'refuse' }).start!(info));

    expect(error).toBeInstanceOf(SinkMisconfiguredError);
    expect(error.code).toBe('SINK_MISCONFIGURED');
    expect(error.message).toContain('duplicate_window');
    expect(info.warn).not.toHaveBeenCalled();
  });

  it("start() neither warns nor refuses with duplicateWindowCheck: 'off', nor when the window is long enough", async () => {
    const stream = await createStream(1_000);
    const off = startInfo(10 * MINUTE_MILLISECONDS);
    const longEnough = startInfo(1_000);

    await sink({ subject: `${stream.prefix}.orders`, duplicateWindowCheck: 'off' }).start!(off);
    await sink({ subject: `${stream.prefix}.orders`, duplicateWindowCheck: 'refuse' }).start!(longEnough);

    expect(off.warn).not.toHaveBeenCalled();
    expect(longEnough.warn).not.toHaveBeenCalled();
  });

  it('start() refuses a subject no stream stores', async () => {
    const error = await errorOf(sink({ subject: `once.nostream.${randomBytes(6).toString('hex')}` }).start!(startInfo(1_000)));

    expect(error).toBeInstanceOf(SinkMisconfiguredError);
    expect(error.code).toBe('SINK_MISCONFIGURED');
  });

  it('start() skips the stream check for a subject function, and deliveries use its connection', async () => {
    const stream = await createStream(1_000);
    const deliverer = sink({ subject: (e) => `${stream.prefix}.${e.topic}` });
    const info = startInfo(10 * MINUTE_MILLISECONDS);

    await deliverer.start!(info);
    await deliverer(event(), context());

    expect(info.warn).not.toHaveBeenCalled();
    expect(await stream.messages()).toBe(1);
  });

  it('a delivery to a subject no stream stores (without start) fails with DeliveryFailedError', async () => {
    const deliver = sink({ subject: `once.nostream.${randomBytes(6).toString('hex')}`, timeoutMs: 1_000 });

    const error = await errorOf(deliver(event(), context()));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.code).toBe('DELIVERY_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.cause).toBeInstanceOf(Error);
  });

  it('an aborted delivery fails with DeliveryFailedError and publishes nothing', async () => {
    const stream = await createStream();
    const deliver = sink({ subject: `${stream.prefix}.orders` });
    const controller = new AbortController();
    controller.abort(new Error('relay shutting down'));

    const error = await errorOf(deliver(event(), { attempt: 1, signal: controller.signal }));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('aborted');
    expect(await stream.messages()).toBe(0);
  });

  it('an abort while waiting for the PubAck fails the delivery at once with DeliveryFailedError', async () => {
    // A plain subscriber that never replies: without the abort, the publish would wait 30 s.
    const subject = `once.silent.${randomBytes(6).toString('hex')}`;
    const silent = nc.subscribe(subject);
    await nc.flush();
    const deliver = sink({ subject, timeoutMs: 30_000 });
    const controller = new AbortController();
    const startedAt = Date.now();
    setTimeout(() => controller.abort(new Error('delivery timed out')), 100);

    const error = await errorOf(deliver(event(), { attempt: 1, signal: controller.signal }));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('aborted');
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(silent.getReceived()).toBe(1);
    silent.unsubscribe();
  });

  it('refuses Nats-* event headers for good (they would control the stream) and publishes nothing', async () => {
    const stream = await createStream();
    const deliver = sink({ subject: `${stream.prefix}.orders` });

    const error = await errorOf(deliver(event({ headers: { 'Nats-Rollup': 'all' } }), context()));

    expect(error).toBeInstanceOf(DeliveryRejectedError);
    expect(error.code).toBe('DELIVERY_REJECTED');
    expect(await stream.messages()).toBe(0);
  });

  it('refuses, for good and unpublished, a subject function returning a wildcard, whitespace or an empty token', async () => {
    const stream = await createStream();
    // A core subscription on the whole prefix sees any publish, stored by the stream or not.
    const watcher = nc.subscribe(`${stream.prefix}.>`);
    await nc.flush();
    const bad = [
      `${stream.prefix}.*`,
      `${stream.prefix}.orders.*`,
      `${stream.prefix}.>`,
      '>',
      '*',
      `${stream.prefix}.orders created`,
      `${stream.prefix}.orders\tcreated`,
      `${stream.prefix}..orders`,
      `${stream.prefix}.orders.`,
      `.${stream.prefix}.orders`,
      '',
    ];

    for (const subject of bad) {
      const deliver = sink({ subject: () => subject, timeoutMs: 1_000 });
      const error = await errorOf(deliver(event(), context()));
      expect(error, JSON.stringify(subject)).toBeInstanceOf(DeliveryRejectedError);
      expect(error.code).toBe('DELIVERY_REJECTED');
      expect(error.retryable).toBe(false);
      expect(error.message).toContain(JSON.stringify(subject));
    }
    const notText = sink({ subject: (() => 42) as unknown as () => string });
    expect(await errorOf(notText(event(), context()))).toBeInstanceOf(DeliveryRejectedError);

    await nc.flush();
    expect(await stream.messages()).toBe(0);
    expect(watcher.getReceived()).toBe(0);
    watcher.unsubscribe();
  });

  it('an unreachable server fails start() and deliveries with DeliveryFailedError within seconds', async () => {
    const unreachable = natsSink({
      servers: '127.0.0.1:1',
      subject: 'once.unreachable',
      connectOptions: { timeout: 1_000, maxReconnectAttempts: 0 },
    });
    sinks.push(unreachable);
    const startedAt = Date.now();

    const startError = await errorOf(unreachable.start!(startInfo(1_000)));
    const deliveryError = await errorOf(unreachable(event(), context()));

    expect(startError).toBeInstanceOf(DeliveryFailedError);
    expect(startError.code).toBe('DELIVERY_FAILED');
    expect(deliveryError).toBeInstanceOf(DeliveryFailedError);
    expect(deliveryError.cause).toBeInstanceOf(Error);
    expect(Date.now() - startedAt).toBeLessThan(5_000);
  });

  it('close() drains the connection; later deliveries fail and a second close() is harmless', async () => {
    const stream = await createStream();
    const deliver = natsSink({ servers: NATS_URL, subject: `${stream.prefix}.orders` });
    await deliver(event(), context());

    await deliver.close!();
    await deliver.close!();
    const error = await errorOf(deliver(event(), context()));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(await stream.messages()).toBe(1);
  });
});

describe('natsSink options', () => {
  const issuesOf = (options: unknown) => {
    try {
      natsSink(options as NatsSinkOptions);
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect((error as InvalidOptionsError).code).toBe('INVALID_OPTIONS');
      return (error as InvalidOptionsError).issues.map((issue) => issue.path.join('.'));
    }
    throw new Error('expected InvalidOptionsError');
  };

  it('fails with InvalidOptionsError naming every bad option, without connecting', () => {
    expect(issuesOf({})).toEqual(expect.arrayContaining(['servers', 'subject']));
    expect(issuesOf({ servers: [], subject: 'orders.*' })).toEqual(expect.arrayContaining(['servers', 'subject']));
    expect(issuesOf({ servers: NATS_URL, subject: 'orders >' })).toEqual(['subject']);
    expect(issuesOf({ servers: NATS_URL, subject: 'orders..created' })).toEqual(['subject']);
    expect(issuesOf({ servers: NATS_URL, subject: 's', duplicateWindowCheck: 'ignore' })).toEqual(['duplicateWindowCheck']);
    expect(issuesOf({ servers: NATS_URL, subject: 's', timeoutMs: 0 })).toEqual(['timeoutMs']);
    expect(issuesOf({ servers: NATS_URL, subject: 's', connectOptions: 'user:pass' })).toEqual(['connectOptions']);
    expect(issuesOf({ servers: NATS_URL, subject: 's', stream: 'ORDERS' })).toEqual(['stream']);
  });

  it('accepts a subject, a list of servers and a subject function', () => {
    expect(typeof natsSink({ servers: [NATS_URL, '127.0.0.1:4223'], subject: 'orders.created' })).toBe('function');
    expect(typeof natsSink({ servers: NATS_URL, subject: (e) => `events.${e.topic}` })).toBe('function');
  });
});
