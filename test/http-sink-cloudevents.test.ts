/**
 * httpSink's CloudEvents mode against a real node:http receiver on 127.0.0.1 that parses every
 * request with the `cloudevents` SDK's own HTTP.toEvent (a receiver nobody here wrote), and
 * verifies the Standard Webhooks signature with standardwebhooks and verifyWebhook. The last test
 * runs the relay over a real Postgres outbox, with a receiver that refuses each first attempt.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HTTP, type CloudEventV1 } from 'cloudevents';
import { Webhook } from 'standardwebhooks';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { DeliveryFailedError, DeliveryRejectedError, InvalidOptionsError, WebhookVerificationError } from '../src/errors.ts';
import { enqueue, startRelay, verifyWebhook, withTenant, type Relay } from '../src/index.ts';
import type { DeliveryContext, DeliveryEvent } from '../src/outbox/sink.ts';
import { httpSink, type HttpSinkOptions } from '../src/outbox/sinks/http-sink.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const run = promisify(execFile);

function makeEvent(overrides: Partial<DeliveryEvent> = {}): DeliveryEvent {
  return {
    id: '7',
    dedupeId: 'once_c10ud',
    tenantId: 'acme',
    topic: 'orders.created',
    orderingKey: 'order-42',
    payload: { orderId: 42, note: 'é ü ✓', tenant: 'not-the-tenant' },
    headers: { 'x-trace-id': 'trace-1' },
    createdAt: new Date('2025-01-02T03:04:05.678Z'),
    ...overrides,
  };
}

const context = (): DeliveryContext => ({ attempt: 1, signal: new AbortController().signal });

interface Received {
  headers: Record<string, string>;
  body: string;
  event: CloudEventV1<unknown>;
}

const servers: http.Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A receiver that parses each request with the SDK, then answers `status(request number)`. */
async function startReceiver(status: (index: number) => number = () => 204) {
  const requests: Received[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(request.headers)) if (typeof value === 'string') headers[name] = value;
      try {
        const event = HTTP.toEvent({ headers, body }) as CloudEventV1<unknown>;
        requests.push({ headers, body, event });
        response.writeHead(status(requests.length - 1)).end();
      } catch (error) {
        response.writeHead(400).end(String(error));
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, requests };
}

function sink(url: string, cloudEvents: HttpSinkOptions['cloudEvents'], extra: Partial<HttpSinkOptions> = {}) {
  return httpSink({ url, secret: SECRET, cloudEvents, ...extra });
}

describe.each(['structured', 'binary'] as const)('httpSink cloudEvents, %s mode', (mode) => {
  it('sends a CloudEvent the SDK parses: id = dedupe id, type = topic, time = enqueued, tenant and ordering key as extensions', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, { mode })(makeEvent(), context());
    const [received] = receiver.requests as [Received];
    expect(received.event).toMatchObject({
      specversion: '1.0',
      id: 'once_c10ud',
      source: '/pg-once/tenants/acme',
      type: 'orders.created',
      datacontenttype: 'application/json',
      data: { orderId: 42, note: 'é ü ✓', tenant: 'not-the-tenant' },
      tenantid: 'acme',
      orderingkey: 'order-42',
    });
    expect(new Date(received.event.time!).toISOString()).toBe('2025-01-02T03:04:05.678Z');
    expect(received.headers['content-type']).toMatch(mode === 'structured' ? /^application\/cloudevents\+json/ : /^application\/json/);
    expect(received.headers['ce-id']).toBe(mode === 'binary' ? 'once_c10ud' : undefined);
    expect(received.headers['x-trace-id']).toBe('trace-1');
    expect(received.headers['idempotency-key']).toBe('once_c10ud');
  });

  it('signs the exact bytes sent, the Standard Webhooks way, under webhook-id = dedupe id', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, { mode })(makeEvent(), context());
    const [received] = receiver.requests as [Received];
    expect(received.headers['webhook-id']).toBe('once_c10ud');
    expect(() => new Webhook(SECRET).verify(received.body, received.headers)).not.toThrow();
    expect(() => new Webhook(SECRET).verify(received.body.replace('42', '43'), received.headers)).toThrow();
  });

  it('carries the same id on every attempt of an event, and a failed attempt is retried as before', async () => {
    const receiver = await startReceiver((index) => (index === 0 ? 503 : 200));
    const deliver = sink(receiver.url, { mode });
    await expect(deliver(makeEvent(), context())).rejects.toBeInstanceOf(DeliveryFailedError);
    await expect(deliver(makeEvent(), context())).resolves.toBeUndefined();
    expect(receiver.requests.map((r) => [r.event.id, r.headers['webhook-id'], r.event.time])).toEqual([
      ['once_c10ud', 'once_c10ud', '2025-01-02T03:04:05.678Z'],
      ['once_c10ud', 'once_c10ud', '2025-01-02T03:04:05.678Z'],
    ]);
  });

  it('keeps the permanent-failure policy: 410 is dead at once', async () => {
    const receiver = await startReceiver(() => 410);
    await expect(sink(receiver.url, { mode })(makeEvent(), context())).rejects.toBeInstanceOf(DeliveryRejectedError);
  });

  it('lets no event or static header stand in for a ce-* attribute', async () => {
    const receiver = await startReceiver();
    const event = makeEvent({ headers: { 'ce-type': 'forged.type', 'ce-tenantid': 'evil', 'CE-Source': '/evil' } });
    await sink(receiver.url, { mode }, { headers: { 'ce-subject': 'static' } })(event, context());
    const [received] = receiver.requests as [Received];
    expect(received.event).toMatchObject({ type: 'orders.created', tenantid: 'acme', source: '/pg-once/tenants/acme' });
    expect(received.event.subject).toBeUndefined();
  });

  it('takes a fixed source, or one per event; omits orderingkey for an event without one', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, { mode, source: 'https://billing.example.com/orders' })(makeEvent({ orderingKey: null }), context());
    await sink(receiver.url, { mode, source: (event) => `urn:tenant:${event.tenantId}` })(makeEvent(), context());
    const [fixed, perEvent] = receiver.requests as [Received, Received];
    expect(fixed.event.source).toBe('https://billing.example.com/orders');
    expect(fixed.event).not.toHaveProperty('orderingkey');
    expect(perEvent.event.source).toBe('urn:tenant:acme');
  });

  it('sends a string payload as JSON text, as its content type says', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, { mode })(makeEvent({ payload: 'hello' }), context());
    const [received] = receiver.requests as [Received];
    expect(received.event.data).toBe('hello');
    if (mode === 'binary') expect(received.body).toBe('"hello"');
  });

  it('refuses, without sending anything, a source function that returns no URI-reference', async () => {
    const receiver = await startReceiver();
    const error = await sink(receiver.url, { mode, source: () => 'not a uri' })(makeEvent(), context()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeliveryRejectedError);
    expect(error).toMatchObject({ code: 'DELIVERY_REJECTED' });
    expect(receiver.requests).toHaveLength(0);
  });
});

describe('httpSink cloudEvents: the tenant', () => {
  it('structured: the tenant is signed; verifyWebhook returns it, and an edited tenantid fails the signature', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, {})(makeEvent(), context());
    const [received] = receiver.requests as [Received];
    const verified = verifyWebhook(received.headers, received.body, SECRET);
    expect(verified).toMatchObject({ messageId: 'once_c10ud', tenant: 'acme', payload: { tenantid: 'acme', data: { orderId: 42 } } });
    const forged = received.body.replace('"tenantid":"acme"', '"tenantid":"other"');
    expect(forged).not.toBe(received.body);
    expect(() => verifyWebhook(received.headers, forged, SECRET)).toThrow(expect.objectContaining({ reason: 'bad_signature' }));
  });

  it('binary: ce-tenantid is unsigned, so verifyWebhook takes the tenant only from options.tenant, never from the payload', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, { mode: 'binary' })(makeEvent(), context());
    const [received] = receiver.requests as [Received];
    let error: unknown;
    try {
      verifyWebhook(received.headers, received.body, SECRET);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(WebhookVerificationError);
    expect(error).toMatchObject({ code: 'WEBHOOK_INVALID', reason: 'missing_tenant' });
    expect(verifyWebhook(received.headers, received.body, SECRET, { tenant: 'acme' })).toMatchObject({ tenant: 'acme', payload: { tenant: 'not-the-tenant' } });
  });

  it('binary: percent-encodes header values per the HTTP binding (HTTP headers cannot carry é or a space as sent)', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, { mode: 'binary' })(makeEvent({ tenantId: 'café 1', orderingKey: 'ordre "été" 100%' }), context());
    const [received] = receiver.requests as [Received];
    expect(received.headers['ce-tenantid']).toBe('caf%C3%A9%201');
    expect(decodeURIComponent(received.headers['ce-orderingkey']!)).toBe('ordre "été" 100%');
    // The default source percent-encodes the tenant, and the header encodes that % once more:
    // a receiver decoding as the binding says gets the source back (the JS SDK does not decode).
    expect(decodeURIComponent(received.headers['ce-source']!)).toBe('/pg-once/tenants/caf%C3%A9%201');
    expect(verifyWebhook(received.headers, received.body, SECRET, { tenant: 'café 1' }).tenant).toBe('café 1');
  });

  it('structured: non-ASCII attributes travel as UTF-8 JSON, unencoded', async () => {
    const receiver = await startReceiver();
    await sink(receiver.url, {})(makeEvent({ tenantId: 'café 1', orderingKey: 'été' }), context());
    const [received] = receiver.requests as [Received];
    expect(received.event).toMatchObject({ tenantid: 'café 1', orderingkey: 'été' });
    expect(verifyWebhook(received.headers, received.body, SECRET).tenant).toBe('café 1');
  });
});

describe('httpSink cloudEvents: options', () => {
  const url = 'https://hooks.example.com/events';
  it.each([
    { name: 'an unknown mode', cloudEvents: { mode: 'batch' }, path: ['cloudEvents', 'mode'] },
    { name: 'a source with a space', cloudEvents: { source: 'my service' }, path: ['cloudEvents', 'source'] },
    { name: 'an empty source', cloudEvents: { source: '' }, path: ['cloudEvents', 'source'] },
    { name: 'a non-ASCII source', cloudEvents: { source: '/café' }, path: ['cloudEvents', 'source'] },
    { name: 'a source that is a number', cloudEvents: { source: 42 }, path: ['cloudEvents', 'source'] },
    { name: 'an unknown key', cloudEvents: { subject: 'x' }, path: ['cloudEvents', 'subject'] },
    { name: 'not an object', cloudEvents: 'binary', path: ['cloudEvents'] },
  ])('refuses $name with InvalidOptionsError', ({ cloudEvents, path }) => {
    let error: unknown;
    try {
      httpSink({ url, secret: SECRET, cloudEvents } as never);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect((error as InvalidOptionsError).issues.map((issue) => issue.path)).toContainEqual(path);
  });

  it('still requires a signing secret', () => {
    expect(() => httpSink({ url, cloudEvents: {} } as never)).toThrow(InvalidOptionsError);
  });

  it('without the cloudevents package, start() refuses with SinkMisconfiguredError naming the fix, and so does a delivery', async () => {
    const { stdout } = await run(process.execPath, ['test/fixtures/cloudevents-missing.ts'], { cwd: join(import.meta.dirname, '..') });
    const refusal = { name: 'SinkMisconfiguredError', code: 'SINK_MISCONFIGURED', message: expect.stringContaining('npm install cloudevents') };
    expect(JSON.parse(stdout)).toEqual({ start: refusal, delivery: refusal });
  });

  it('starts (the SDK loads) and accepts a percent-encoded source', async () => {
    const deliver = httpSink({ url, secret: SECRET, cloudEvents: { source: '/pg-once/caf%C3%A9' } });
    await expect(deliver.start?.({ retryHorizonMs: 1, warn: () => {} })).resolves.toBeUndefined();
  });
});

describe('relay -> httpSink cloudEvents -> receiver', () => {
  let fx: AppFixture | undefined;
  const relays: Relay[] = [];
  afterAll(async () => {
    await Promise.all(relays.map((relay) => relay.stop()));
    await fx?.close();
  });

  it('delivers each outbox event as a CloudEvent whose id is its dedupe id on every attempt', async () => {
    fx = await createAppFixture(4);
    const relayUrl = await fx.database.createLoginRole('relay');
    // Refuses the first attempt of every event, so each is delivered on its retry.
    const seen = new Set<string>();
    const requests: Received[] = [];
    const server = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const headers = Object.fromEntries(Object.entries(request.headers).filter(([, v]) => typeof v === 'string')) as Record<string, string>;
        const event = HTTP.toEvent({ headers, body }) as CloudEventV1<unknown>;
        requests.push({ headers, body, event });
        const first = !seen.has(event.id);
        seen.add(event.id);
        response.writeHead(first ? 503 : 200).end();
      });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`;

    const enqueued: { tenant: string; dedupeId: string }[] = [];
    for (const tenant of ['tenant-a', 'tenant-b']) {
      await withTenant(fx.app, tenant, async (tx) => {
        for (let n = 0; n < 5; n++) {
          const { dedupeId } = await enqueue(tx, { topic: 'orders.created', payload: { n }, orderingKey: `order-${n}` });
          enqueued.push({ tenant, dedupeId });
        }
      });
    }
    relays.push(
      await startRelay({
        connectionString: relayUrl,
        sinks: { '>': httpSink({ url, secret: SECRET, timeoutMs: 2_000, cloudEvents: { mode: 'binary' } }) },
        backoff: { initialMs: 5, maxMs: 50 },
        handleSignals: false,
        logger: { warn: () => {}, error: () => {} },
      }),
    );
    expect(await waitForOutbox(fx.database.admin, (c) => c.delivered === 10, 30_000)).toEqual({ pending: 0, delivered: 10, dead: 0 });

    for (const { tenant, dedupeId } of enqueued) {
      const attempts = requests.filter((r) => r.event.id === dedupeId);
      expect(attempts.length).toBeGreaterThanOrEqual(2);
      for (const attempt of attempts) {
        expect(attempt.event).toMatchObject({ type: 'orders.created', tenantid: tenant, source: `/pg-once/tenants/${tenant}` });
        expect(attempt.headers['webhook-id']).toBe(dedupeId);
        expect(verifyWebhook(attempt.headers, attempt.body, SECRET, { tenant }).messageId).toBe(dedupeId);
      }
    }
  });
});
