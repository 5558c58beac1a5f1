/**
 * amqpSink against the machine's RabbitMQ (RABBITMQ_URL, default 127.0.0.1:5672), each test file
 * in a virtual host of its own: what a message carries, confirms, unroutable messages, start()'s
 * checks, coded errors; then end to end through the relay with the broker closing the sink's
 * connection mid-stream, and the example consumer (examples/amqp-consumer.ts) deduplicating with
 * receiveOnce.
 *
 * Without a broker the suites are skipped, unless CI or ONCE_REQUIRE_SERVICES is set: then they
 * fail, so a CI run cannot go green by silently testing nothing.
 */
import { randomBytes } from 'node:crypto';
import { Connection, type AsyncMessage, type Channel } from 'rabbitmq-client';
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it, vi } from 'vitest';
import type { z } from 'zod';
import { receivedEventsTable } from '../examples/inbox-receiver.ts';
import { startAmqpConsumer, storeAmqpEvent } from '../examples/amqp-consumer.ts';
import { DeliveryFailedError, DeliveryRejectedError, SinkMisconfiguredError } from '../src/errors.ts';
import type { Relay, Sink } from '../src/index.ts';
import { amqpSink, type amqpSinkOptionsSchema, type AmqpSinkOptions } from '../src/outbox/sinks/amqp-sink.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';
import { optionIssues, pacedSink, startBrokerRelay, testContext, testEvent, testStartInfo, twiceSink } from './support/sink-fixtures.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { createVhost, rabbitAvailable, rabbitRequired, requireRabbit, type TestVhost } from './support/rabbitmq.ts';

/** Every message in `queue` (acked as read), in queue order. */
async function drain(channel: Channel, queue: string): Promise<AsyncMessage[]> {
  const messages: AsyncMessage[] = [];
  for (;;) {
    const message = await channel.basicGet({ queue, noAck: true });
    if (!message) return messages;
    messages.push(message as unknown as AsyncMessage);
  }
}

describe.skipIf(!rabbitAvailable && !rabbitRequired)('amqpSink (real RabbitMQ)', () => {
  let vhost: TestVhost;
  let connection: Connection;
  let channel: Channel;
  const sinks: Sink[] = [];

  beforeAll(async () => {
    requireRabbit();
    vhost = await createVhost();
    connection = new Connection(vhost.url);
    channel = await connection.acquire();
  });
  afterEach(async () => {
    await Promise.all(sinks.splice(0).map((sink) => sink.close?.()));
  });
  afterAll(async () => {
    await channel?.close();
    await connection?.close();
    await vhost?.delete();
  });

  /** A queue of its own, bound to amq.topic for `pattern`. */
  async function boundQueue(pattern: string, exchange = 'amq.topic') {
    const queue = `q_${randomBytes(4).toString('hex')}`;
    await channel.queueDeclare({ queue, durable: true });
    await channel.queueBind({ queue, exchange, routingKey: pattern });
    return queue;
  }

  function sink(options: Partial<AmqpSinkOptions> = {}): Sink {
    const created = amqpSink({ url: vhost.url, ...options });
    sinks.push(created);
    return created;
  }

  it('publishes a persistent message with message_id = dedupe id, the tenant, topic and ordering key, once confirmed', async () => {
    const queue = await boundQueue('orders.*');
    const published = testEvent({ orderingKey: 'order-42', headers: { traceparent: 't-1' } });

    await sink()(published, testContext());

    const [message, ...rest] = await drain(channel, queue);
    expect(rest).toEqual([]);
    expect(message).toMatchObject({
      exchange: 'amq.topic',
      routingKey: 'orders.created',
      messageId: published.dedupeId,
      durable: true,
      contentType: 'application/json',
      type: 'orders.created',
      appId: 'pg-once',
      timestamp: Math.floor(published.createdAt.getTime() / 1_000),
      headers: {
        traceparent: 't-1',
        'once-tenant': 'tenant-a',
        'once-topic': 'orders.created',
        'once-ordering-key': 'order-42',
      },
      body: {
        id: published.dedupeId,
        type: 'orders.created',
        timestamp: '2025-01-02T03:04:05.678Z',
        data: { orderId: 42, total: '9.99' },
      },
    });
  });

  it('publishes a repeat again under the same message_id: RabbitMQ does not dedupe, the consumer does', async () => {
    const queue = await boundQueue('orders.*');
    const deliver = sink();
    const once = testEvent();

    for (let attempt = 1; attempt <= 3; attempt += 1) await deliver(once, { ...testContext(), attempt });

    const messages = await drain(channel, queue);
    expect(messages.map((m) => m.messageId)).toEqual([once.dedupeId, once.dedupeId, once.dedupeId]);
    expect(messages[0]?.headers).not.toHaveProperty('once-ordering-key');
  });

  it('routes with an exchange function and a routing-key function', async () => {
    await channel.exchangeDeclare({ exchange: 'events.direct', type: 'direct', durable: true });
    const queue = await boundQueue('tenant-b', 'events.direct');
    const deliver = sink({ exchange: () => 'events.direct', routingKey: (e) => e.tenantId });

    await deliver(testEvent({ tenantId: 'tenant-b' }), testContext());

    expect((await drain(channel, queue)).map((m) => [m.exchange, m.routingKey])).toEqual([['events.direct', 'tenant-b']]);
  });

  it("an unroutable message fails with DeliveryFailedError (retried) by default, DeliveryRejectedError with unroutable: 'reject'", async () => {
    const topic = `nobody.${randomBytes(4).toString('hex')}`;

    const retried = await errorOf(sink()(testEvent({ topic }), testContext()));
    const rejected = await errorOf(sink({ unroutable: 'reject' })(testEvent({ topic }), testContext()));

    expect(retried).toBeInstanceOf(DeliveryFailedError);
    expect(retried.retryable).toBe(true);
    expect(retried.message).toContain('NO_ROUTE');
    expect(retried.message).toContain(topic);
    expect(rejected).toBeInstanceOf(DeliveryRejectedError);
    expect(rejected.code).toBe('DELIVERY_REJECTED');
  });

  it("unroutable: 'drop' publishes without mandatory, so an event nobody listens to counts as delivered", async () => {
    await expect(sink({ unroutable: 'drop' })(testEvent({ topic: 'nobody.listens' }), testContext())).resolves.toBeUndefined();
  });

  it('a routed message right after an unroutable one is not mistaken for returned', async () => {
    const queue = await boundQueue('orders.*');
    const deliver = sink();
    const outcomes = await Promise.allSettled([
      deliver(testEvent({ topic: 'nobody.here' }), testContext()),
      deliver(testEvent(), testContext()),
      deliver(testEvent({ topic: 'nobody.there' }), testContext()),
      deliver(testEvent(), testContext()),
    ]);

    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'fulfilled', 'rejected', 'fulfilled']);
    expect(await drain(channel, queue)).toHaveLength(2);
  });

  it('start() connects and accepts an existing exchange; refuses a missing one with SinkMisconfiguredError', async () => {
    const info = testStartInfo();
    await sink().start!(info);
    await sink({ exchange: '' }).start!(info);
    await sink({ exchange: () => 'not.checked' }).start!(info);

    const error = await errorOf(sink({ exchange: 'no.such.exchange' }).start!(info));

    expect(error).toBeInstanceOf(SinkMisconfiguredError);
    expect(error.code).toBe('SINK_MISCONFIGURED');
    expect(error.message).toContain('no.such.exchange');
    expect(info.warn).not.toHaveBeenCalled();
  });

  it('a publish to a missing exchange (without start) fails with DeliveryFailedError, and the next one works', async () => {
    const queue = await boundQueue('orders.*');
    const deliver = sink({ exchange: (e) => (e.id === 'bad' ? 'no.such.exchange' : 'amq.topic') });

    const error = await errorOf(deliver(testEvent({ id: 'bad' }), testContext()));
    await deliver(testEvent(), testContext());

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('NOT_FOUND');
    expect(await drain(channel, queue)).toHaveLength(1);
  });

  it('refuses reserved event headers (x-*, once-*, CC, BCC) for good and publishes nothing', async () => {
    const queue = await boundQueue('orders.*');
    const deliver = sink();

    for (const name of ['x-delay', 'Once-Tenant', 'CC', 'bcc']) {
      const error = await errorOf(deliver(testEvent({ headers: { [name]: 'other-queue' } }), testContext()));
      expect(error).toBeInstanceOf(DeliveryRejectedError);
      expect(error.message).toContain(name);
    }
    expect(await drain(channel, queue)).toEqual([]);
  });

  it('an aborted delivery fails with DeliveryFailedError', async () => {
    const controller = new AbortController();
    controller.abort(new Error('relay shutting down'));

    const error = await errorOf(sink()(testEvent(), { attempt: 1, signal: controller.signal }));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('aborted');
  });

  it('an unreachable broker fails start() and deliveries with DeliveryFailedError within seconds, password hidden', async () => {
    const unreachable = sink({ url: 'amqp://guest:secret-pw@127.0.0.1:1', timeoutMs: 1_000 });
    const startedAt = Date.now();

    const startError = await errorOf(unreachable.start!(testStartInfo()));
    const deliveryError = await errorOf(unreachable(testEvent(), testContext()));

    expect(startError).toBeInstanceOf(DeliveryFailedError);
    expect(startError.message).not.toContain('secret-pw');
    expect(deliveryError).toBeInstanceOf(DeliveryFailedError);
    await unreachable.close!();
    expect(Date.now() - startedAt).toBeLessThan(5_000);
  });

  it('close() closes the connection; later deliveries fail and a second close() is harmless', async () => {
    const queue = await boundQueue('orders.*');
    const deliver = amqpSink({ url: vhost.url });
    await deliver(testEvent(), testContext());

    await deliver.close!();
    await deliver.close!();
    const error = await errorOf(deliver(testEvent(), testContext()));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(await drain(channel, queue)).toHaveLength(1);
  });
});

describe.skipIf(!rabbitAvailable && !rabbitRequired)('relay -> amqpSink -> RabbitMQ, and the example consumer', () => {
  const COUNT = 1_000;
  let fx: AppFixture;
  let relayUrl: string;
  let vhost: TestVhost;
  let connection: Connection;
  let channel: Channel;
  const relays: Relay[] = [];

  beforeAll(async () => {
    requireRabbit();
    fx = await createAppFixture(8);
    await fx.database.admin.query(receivedEventsTable((await fx.database.roles())!.app));
    relayUrl = await fx.database.createLoginRole('relay');
    vhost = await createVhost();
  });
  afterAll(async () => {
    await Promise.all(relays.map((relay) => relay.stop()));
    await channel?.close().catch(() => {});
    await connection?.close();
    await vhost?.delete();
    await fx?.close();
  });

  async function relay(sink: Sink): Promise<Relay> {
    const started = await startBrokerRelay(relayUrl, sink);
    relays.push(started);
    return started;
  }

  it(`${COUNT} events with the broker closing the sink's connection mid-stream: every event in the queue, repeats only under the same message_id`, async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    // The test's own connection opens after the closing: it reads the queue at the end.
    const setup = new Connection(vhost.url);
    const setupChannel = await setup.acquire();
    await setupChannel.queueDeclare({ queue: 'all-events', durable: true });
    await setupChannel.queueBind({ queue: 'all-events', exchange: 'amq.topic', routingKey: 'test.#' });
    await setupChannel.close();
    await setup.close();

    const refs = await fillOutbox(fx.app, { count: COUNT, tenants: 4, orderingKeys: 20 });
    const amqp = amqpSink({ url: vhost.url, timeoutMs: 3_000, connectOptions: { retryLow: 50, retryHigh: 200 } });
    // Paced (a few ms per event) so the stream is still flowing when rabbitmqctl, which takes a
    // second or two to start, closes the connection.
    const paced = pacedSink(amqp, 15);
    const started = await relay(paced);

    const before = await waitForOutbox(fx.database.admin, (c) => c.delivered >= 100, 30_000);
    await vhost.closeConnections();
    const atClose = await waitForOutbox(fx.database.admin, () => true);
    await vhost.closeConnections();
    const counts = await waitForOutbox(fx.database.admin, (c) => c.delivered === COUNT, 120_000);
    await started.stop();

    expect(before.delivered).toBeLessThan(COUNT);
    expect(atClose.delivered).toBeLessThan(COUNT); // the closing landed mid-stream
    expect(counts).toEqual({ pending: 0, delivered: COUNT, dead: 0 });

    connection = new Connection(vhost.url);
    channel = await connection.acquire();
    const messages = await drain(channel, 'all-events');
    const byId = new Map(refs.map((ref) => [ref.dedupeId, ref]));
    const seen = new Map<string, number>();
    for (const message of messages) {
      const ref = byId.get(message.messageId!);
      expect(ref, `message_id ${message.messageId} is no event's dedupe id`).toBeDefined();
      // A repeat is the same event: same body, same tenant, under the same message_id.
      expect(message.body).toMatchObject({ id: message.messageId, data: { seq: ref!.seq } });
      expect(message.headers).toMatchObject({ 'once-tenant': ref!.tenantId, 'once-ordering-key': ref!.orderingKey });
      seen.set(message.messageId!, (seen.get(message.messageId!) ?? 0) + 1);
    }
    expect(seen.size).toBe(COUNT);
    expect(messages.length).toBeGreaterThanOrEqual(COUNT);
    console.info(
      `amqp relay test: ${COUNT} events, ${messages.length} messages (${messages.length - COUNT} repeats), ` +
        `${paced.failures()} failed attempts, closed at ${atClose.delivered} delivered`,
    );
  });

  it('the example consumer processes each event once however often RabbitMQ delivers it, in its tenant', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    const consumerConnection = new Connection(vhost.url);
    let handled = 0;
    const consumer = startAmqpConsumer({
      connection: consumerConnection,
      db: fx.app,
      queue: 'example-consumer',
      bindings: ['payments.#'],
      concurrency: 4,
      handle: async (tx, received) => {
        handled += 1;
        return storeAmqpEvent(tx, received);
      },
    });
    await new Promise((resolve) => consumer.once('ready', resolve));
    try {
      const refs = await fillOutbox(fx.app, { count: 40, tenants: 2, topic: 'payments.charged' });
      // Every event published twice, as a republish after a lost confirm would.
      const started = await relay(twiceSink(amqpSink({ url: vhost.url })));
      await waitForOutbox(fx.database.admin, (c) => c.delivered === 40);
      await started.stop();
      await vi.waitFor(
        async () => {
          const { rows } = await fx.database.admin.query<{ n: number }>(
            // Both copies of an event may be in flight at once: the second then waits and replays.
            `SELECT count(*)::int AS n FROM once.dedupe_audit WHERE key LIKE 'inbox:%' AND detail->>'outcome' = 'replayed'`,
          );
          expect(rows[0]!.n).toBe(40);
        },
        { timeout: 20_000, interval: 100 },
      );

      expect(handled).toBe(40);
      const { rows } = await fx.database.admin.query<{ tenant_id: string; message_id: string }>('SELECT tenant_id, message_id FROM received_events');
      expect(rows).toHaveLength(40);
      expect(new Set(rows.map((r) => `${r.tenant_id}/${r.message_id}`))).toEqual(new Set(refs.map((r) => `${r.tenantId}/${r.dedupeId}`)));
    } finally {
      await consumer.close();
      await consumerConnection.close();
    }
  });

  it('the example consumer drops (dead-letters) a message that amqpSink did not publish, and processes nothing', async () => {
    const consumerConnection = new Connection(vhost.url);
    let handled = 0;
    const consumer = startAmqpConsumer({
      connection: consumerConnection,
      db: fx.app,
      queue: 'example-strays',
      bindings: ['strays.#'],
      handle: async () => {
        handled += 1;
      },
    });
    await new Promise((resolve) => consumer.once('ready', resolve));
    const publisher = consumerConnection.createPublisher({ confirm: true });
    try {
      await publisher.send({ exchange: 'amq.topic', routingKey: 'strays.x' }, { no: 'message id' });
      await publisher.send({ exchange: 'amq.topic', routingKey: 'strays.x', messageId: 'm1' }, { no: 'tenant' });
      await vi.waitFor(async () => expect((await channel.queueDeclare({ queue: 'example-strays', passive: true })).messageCount).toBe(0));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(handled).toBe(0);
    } finally {
      await publisher.close();
      await consumer.close();
      await consumerConnection.close();
    }
  });
});

describe('amqpSink options', () => {
  const issuesOf = (options: unknown) => optionIssues(amqpSink, options);
  const url = 'amqp://127.0.0.1';

  it('fails with InvalidOptionsError naming every bad option, without connecting', () => {
    expect(issuesOf({})).toEqual(['url']);
    expect(issuesOf({ url: 'http://rabbit' })).toEqual(['url']);
    expect(issuesOf({ url, exchange: 'x'.repeat(256) })).toEqual(['exchange']);
    expect(issuesOf({ url, routingKey: 'orders' })).toEqual(['routingKey']);
    expect(issuesOf({ url, unroutable: 'ignore' })).toEqual(['unroutable']);
    expect(issuesOf({ url, timeoutMs: 0 })).toEqual(['timeoutMs']);
    expect(issuesOf({ url, connectOptions: 'guest' })).toEqual(['connectOptions']);
    expect(issuesOf({ url, queue: 'orders' })).toEqual(['queue']);
  });

  it('the hand-written options interface matches the schema', () => {
    expectTypeOf<z.input<typeof amqpSinkOptionsSchema>>().toEqualTypeOf<AmqpSinkOptions>();
  });
});
