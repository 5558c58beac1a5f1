/**
 * httpSink against a real node:http receiver on 127.0.0.1 (no fetch mocks): every delivery is
 * verified the way a receiver would, with standardwebhooks' `verify`, and every status, timeout
 * and broken connection is mapped to the outcome the relay acts on.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import { DeliveryFailedError, DeliveryRejectedError, InvalidOptionsError } from '../src/errors.ts';
import type { DeliveryContext, DeliveryEvent } from '../src/outbox/sink.ts';
import { defaultIsPermanent, httpSink, type httpSinkOptionsSchema, type HttpSinkOptions } from '../src/outbox/sinks/http-sink.ts';

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const OTHER_SECRET = `whsec_${randomBytes(32).toString('base64')}`;

function makeEvent(overrides: Partial<DeliveryEvent> = {}): DeliveryEvent {
  return {
    id: '1',
    dedupeId: 'once_abc',
    tenantId: 't',
    topic: 'orders.created',
    orderingKey: null,
    payload: { orderId: 42, items: ['book'], note: 'é ü ✓' },
    headers: { 'x-trace-id': 'trace-1' },
    createdAt: new Date('2025-01-02T03:04:05.678Z'),
    ...overrides,
  };
}

function makeContext(signal = new AbortController().signal): DeliveryContext {
  return { attempt: 1, signal };
}

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

type Handler = (request: http.IncomingMessage, response: http.ServerResponse, body: string) => void;

const servers: http.Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    // A receiver that never answers keeps its request open; close() alone would wait for it.
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A receiver that records each request's headers and raw body, then lets `handler` answer. */
async function startReceiver(handler: Handler) {
  const requests: Received[] = [];
  let connections = 0;
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ headers: request.headers, body });
      handler(request, response, body);
    });
  });
  server.on('connection', () => connections++);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hooks/orders?token=abc`, requests, connections: () => connections };
}

const answer =
  (status: number, headers: Record<string, string> = {}, body = ''): Handler =>
  (_request, response) => {
    response.writeHead(status, headers);
    response.end(body);
  };

/** The webhook headers as the plain strings standardwebhooks' verify expects. */
function webhookHeaders(received: Received): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(received.headers)) if (typeof value === 'string') result[name] = value;
  return result;
}

/** The error a delivery rejects with; it must never carry the secret. */
async function deliveryError(promise: Promise<void>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(Error);
  expect((error as Error).message).not.toContain(SECRET.slice('whsec_'.length));
  return error as Error;
}

describe('httpSink: what the receiver gets', () => {
  it('POSTs the envelope signed so the receiver verifies it, with webhook-id = idempotency-key = dedupeId', async () => {
    const receiver = await startReceiver(answer(204));
    const event = makeEvent();
    const before = Math.floor(Date.now() / 1_000);
    await httpSink({ url: receiver.url, secret: SECRET, headers: { authorization: 'Bearer t0ken' } })(event, makeContext());

    expect(receiver.requests).toHaveLength(1);
    const [received] = receiver.requests as [Received];
    const verified = new Webhook(SECRET).verify(received.body, webhookHeaders(received));
    expect(verified).toEqual({
      id: 'once_abc',
      type: 'orders.created',
      timestamp: '2025-01-02T03:04:05.678Z',
      tenant: 't',
      data: { orderId: 42, items: ['book'], note: 'é ü ✓' },
    });
    expect(received.headers['webhook-id']).toBe('once_abc');
    expect(received.headers['idempotency-key']).toBe('once_abc');
    expect(received.headers['content-type']).toBe('application/json');
    expect(received.headers['x-trace-id']).toBe('trace-1');
    expect(received.headers.authorization).toBe('Bearer t0ken');
    const timestamp = Number(received.headers['webhook-timestamp']);
    expect(timestamp).toBeGreaterThanOrEqual(before);
    expect(timestamp).toBeLessThanOrEqual(Math.floor(Date.now() / 1_000));
    expect(received.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
  });

  it('is signed with the configured secret: a receiver holding another secret rejects it', async () => {
    const receiver = await startReceiver(answer(200));
    await httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext());
    const [received] = receiver.requests as [Received];
    expect(() => new Webhook(OTHER_SECRET).verify(received.body, webhookHeaders(received))).toThrow(WebhookVerificationError);
    // And a tampered body fails even with the right secret.
    expect(() => new Webhook(SECRET).verify(received.body.replace('42', '43'), webhookHeaders(received))).toThrow(WebhookVerificationError);
  });

  it('sends the same webhook-id on every delivery of an event, so the receiver can dedupe', async () => {
    const receiver = await startReceiver(answer(200));
    const sink = httpSink({ url: receiver.url, secret: SECRET });
    const event = makeEvent();
    await sink(event, makeContext());
    await sink(event, { attempt: 2, signal: new AbortController().signal });

    expect(receiver.requests).toHaveLength(2);
    for (const received of receiver.requests) {
      expect(received.headers['webhook-id']).toBe('once_abc');
      expect(received.headers['idempotency-key']).toBe('once_abc');
      expect(() => new Webhook(SECRET).verify(received.body, webhookHeaders(received))).not.toThrow();
    }
    expect(receiver.requests[0]?.body).toBe(receiver.requests[1]?.body);
  });

  it('lets neither event nor static headers replace the headers it owns; static ones win over the event', async () => {
    const receiver = await startReceiver(answer(200));
    const event = makeEvent({
      headers: {
        'Webhook-Id': 'forged',
        'idempotency-key': 'forged',
        'content-type': 'text/plain',
        'content-length': '3',
        expect: '100-continue',
        'x-trace-id': 'from-event',
        'x-only-event': 'e',
      },
    });
    const sink = httpSink({
      url: receiver.url,
      secret: SECRET,
      headers: { 'webhook-signature': 'v1,forged', 'WEBHOOK-TIMESTAMP': '1', 'x-trace-id': 'from-static' },
    });
    await sink(event, makeContext());

    const [received] = receiver.requests as [Received];
    expect(() => new Webhook(SECRET).verify(received.body, webhookHeaders(received))).not.toThrow();
    expect(received.headers['webhook-id']).toBe('once_abc');
    expect(received.headers['idempotency-key']).toBe('once_abc');
    expect(received.headers['content-type']).toBe('application/json');
    expect(received.headers['content-length']).toBe(String(Buffer.byteLength(received.body)));
    expect(received.headers.expect).toBeUndefined();
    expect(received.headers['x-trace-id']).toBe('from-static');
    expect(received.headers['x-only-event']).toBe('e');
  });

  it('signs the tenant inside the body: changing it breaks the signature', async () => {
    const receiver = await startReceiver(answer(200));
    await httpSink({ url: receiver.url, secret: SECRET })(makeEvent({ tenantId: 'acme' }), makeContext());
    const [received] = receiver.requests as [Received];
    expect(new Webhook(SECRET).verify(received.body, webhookHeaders(received))).toMatchObject({ tenant: 'acme' });
    expect(() => new Webhook(SECRET).verify(received.body.replace('"acme"', '"evil"'), webhookHeaders(received))).toThrow(WebhookVerificationError);
  });

  it('signs with every secret of a rotation: a receiver holding either one verifies', async () => {
    const receiver = await startReceiver(answer(200));
    await httpSink({ url: receiver.url, secret: [SECRET, OTHER_SECRET] })(makeEvent(), makeContext());
    const [received] = receiver.requests as [Received];
    expect(received.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=* v1,[A-Za-z0-9+/]+=*$/);
    for (const secret of [SECRET, OTHER_SECRET]) {
      expect(() => new Webhook(secret).verify(received.body, webhookHeaders(received))).not.toThrow();
    }
    const third = `whsec_${randomBytes(32).toString('base64')}`;
    expect(() => new Webhook(third).verify(received.body, webhookHeaders(received))).toThrow(WebhookVerificationError);
  });

  it("signs the time of the context's clock (the database's) when the relay supplies one", async () => {
    const receiver = await startReceiver(answer(200));
    const databaseNow = new Date(Date.now() - 90_000);
    const context = { ...makeContext(), now: () => databaseNow };
    await httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), context);
    const [received] = receiver.requests as [Received];
    expect(received.headers['webhook-timestamp']).toBe(String(Math.floor(databaseNow.getTime() / 1_000)));
    expect(received.headers['webhook-signature']).toBe(new Webhook(SECRET).sign('once_abc', databaseNow, received.body));
  });

  it.each(['msg-日本', 'café', 'line\nbreak', ' padded', 'padded ', 'tab\there'])(
    'rejects at once, sending nothing, a dedupe id HTTP headers cannot carry as signed: %j',
    async (dedupeId) => {
      const receiver = await startReceiver(answer(200));
      const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent({ dedupeId }), makeContext()));
      expect(error).toBeInstanceOf(DeliveryRejectedError);
      expect(error.message).toContain('dedupe id');
      expect(receiver.requests).toHaveLength(0);
    },
  );

  it('rejects an event whose header HTTP cannot carry, without sending anything', async () => {
    const receiver = await startReceiver(answer(200));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent({ headers: { 'bad name': 'x' } }), makeContext()));
    expect(error).toBeInstanceOf(DeliveryRejectedError);
    expect(error.message).toContain('bad name');
    expect(receiver.requests).toHaveLength(0);
  });
});

describe('httpSink: outcomes', () => {
  it.each([200, 201, 202, 204])('resolves on %i', async (status) => {
    const receiver = await startReceiver(answer(status, {}, status === 204 ? '' : '{"ok":true}'));
    await expect(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext())).resolves.toBeUndefined();
    expect(receiver.requests).toHaveLength(1);
  });

  it('rejects for good on 410 Gone, naming the status', async () => {
    const receiver = await startReceiver(answer(410));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryRejectedError);
    expect(error).toMatchObject({ code: 'DELIVERY_REJECTED', retryable: false });
    expect(error.message).toContain('410');
  });

  // A mistyped secret (401), a moved route (404) or a receiver bug (400, 422) is fixed by its
  // operator within the hours retries last; dead-lettering on it would lose the whole stream.
  it.each([400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503])('fails for a retry on %i', async (status) => {
    const receiver = await startReceiver(answer(status));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error).toMatchObject({ code: 'DELIVERY_FAILED', retryable: true, retryAfterMs: undefined });
    expect(error.message).toContain(String(status));
  });

  it('takes the permanent set from isPermanent: a default* factory with other statuses, or any function', async () => {
    const receiver = await startReceiver((request, response) => {
      const status = Number(new URL(request.url!, 'http://x').searchParams.get('status'));
      response.writeHead(status, status === 400 ? { 'x-permanent': 'yes' } : {});
      response.end();
    });
    const outcome = async (options: Partial<HttpSinkOptions>, status: number) =>
      (await deliveryError(httpSink({ url: `${receiver.url}&status=${status}`, secret: SECRET, ...options })(makeEvent(), makeContext()))).constructor;
    const statuses = { isPermanent: defaultIsPermanent({ statuses: [404, 410] }) };
    expect(await outcome(statuses, 404)).toBe(DeliveryRejectedError);
    expect(await outcome(statuses, 410)).toBe(DeliveryRejectedError);
    expect(await outcome(statuses, 400)).toBe(DeliveryFailedError);
    const never = { isPermanent: () => false };
    expect(await outcome(never, 410)).toBe(DeliveryFailedError);
    const byHeader = { isPermanent: ({ headers }: { headers: Headers }) => headers.get('x-permanent') === 'yes' };
    expect(await outcome(byHeader, 400)).toBe(DeliveryRejectedError);
    expect(await outcome(byHeader, 410)).toBe(DeliveryFailedError);
  });

  it("puts the start of the receiver's explanation in the message, and never the URL's path or query", async () => {
    const receiver = await startReceiver(answer(410, { 'content-type': 'application/json' }, '{"error":"sku\u0000missing"}'));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error.message).toContain('410: {"error":"sku missing"}');
    expect(error.message).not.toContain('token=abc');
    expect(error.message).not.toContain('/hooks/orders');
  });

  it('does not follow redirects (fetch would turn the POST into a GET), and retries', async () => {
    const receiver = await startReceiver(answer(302, { location: '/elsewhere' }));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('302');
    expect(receiver.requests).toHaveLength(1);
  });

  const inTwoMinutes = () => new Date(Date.now() + 120_000).toUTCString();
  it.each([
    { status: 503, retryAfter: () => '3', expected: [3_000, 3_000] },
    { status: 429, retryAfter: () => ' 0 ', expected: [0, 0] },
    { status: 429, retryAfter: inTwoMinutes, expected: [110_000, 120_000] },
    { status: 408, retryAfter: () => new Date(Date.now() - 60_000).toUTCString(), expected: [0, 0] },
    { status: 500, retryAfter: () => '86400', expected: [3_600_000, 3_600_000] },
    { status: 401, retryAfter: () => '30', expected: [30_000, 30_000] },
  ])('honours Retry-After $expected ms on $status', async ({ status, retryAfter, expected }) => {
    const receiver = await startReceiver((_request, response) => {
      response.writeHead(status, { 'retry-after': retryAfter() });
      response.end();
    });
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    const { retryAfterMs } = error as DeliveryFailedError;
    expect(retryAfterMs).toBeGreaterThanOrEqual(expected[0]!);
    expect(retryAfterMs).toBeLessThanOrEqual(expected[1]!);
  });

  it.each(['soon', '-5', '1.5', '2030-01-01', 'Mon, garbage', ''])('ignores a Retry-After of %j', async (retryAfter) => {
    const receiver = await startReceiver(answer(503, { 'retry-after': retryAfter }));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect((error as DeliveryFailedError).retryAfterMs).toBeUndefined();
  });
});

describe('httpSink: timeouts and broken connections', () => {
  it('times out a receiver that never answers', async () => {
    const receiver = await startReceiver(() => {});
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET, timeoutMs: 200 })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toMatch(/timed out after 200 ms/);
    expect(receiver.requests).toHaveLength(1);
  });

  it('times out a 2xx whose body never ends', async () => {
    const receiver = await startReceiver((_request, response) => {
      response.writeHead(200);
      response.write('still working');
    });
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET, timeoutMs: 200 })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toMatch(/timed out/);
  });

  it('fails when the receiver destroys the socket mid-way through the status line', async () => {
    const receiver = await startReceiver((request) => {
      request.socket.end('HTTP/1.1 200 OK\r\nContent-Le', () => request.socket.destroy());
    });
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).not.toMatch(/timed out/);
  });

  it('fails when a 2xx body is cut off (the receiver may have crashed while working)', async () => {
    const receiver = await startReceiver((_request, response) => {
      response.writeHead(200, { 'content-length': '100' });
      response.write('partial', () => response.socket?.destroy());
    });
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('reading the 200 response');
  });

  it('fails when nothing listens on the port', async () => {
    const receiver = await startReceiver(answer(200));
    const url = receiver.url;
    for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
    const error = await deliveryError(httpSink({ url, secret: SECRET })(makeEvent(), makeContext()));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toMatch(/ECONNREFUSED/);
  });

  it('stops promptly when the relay aborts the delivery', async () => {
    let arrived!: () => void;
    const requestArrived = new Promise<void>((resolve) => (arrived = resolve));
    const receiver = await startReceiver(() => arrived());
    const controller = new AbortController();
    const started = Date.now();
    const delivery = deliveryError(httpSink({ url: receiver.url, secret: SECRET, timeoutMs: 30_000 })(makeEvent(), makeContext(controller.signal)));
    await requestArrived;
    controller.abort();
    const error = await delivery;
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toMatch(/aborted by the relay/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('sends nothing when the signal is already aborted', async () => {
    const receiver = await startReceiver(answer(200));
    const error = await deliveryError(httpSink({ url: receiver.url, secret: SECRET })(makeEvent(), makeContext(AbortSignal.abort())));
    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(receiver.requests).toHaveLength(0);
  });

  it('keeps connections alive across deliveries, and does not download huge bodies', async () => {
    const receiver = await startReceiver(answer(200, {}, 'ok'));
    const sink = httpSink({ url: receiver.url, secret: SECRET });
    for (let attempt = 1; attempt <= 6; attempt++) await sink(makeEvent({ dedupeId: `once_${attempt}` }), makeContext());
    expect(receiver.requests).toHaveLength(6);
    // undici may open a second socket while the first is being released, never one per delivery.
    expect(receiver.connections()).toBeLessThanOrEqual(2);

    const big = await startReceiver(answer(200, {}, 'x'.repeat(4 * 1_024 * 1_024)));
    await expect(httpSink({ url: big.url, secret: SECRET })(makeEvent(), makeContext())).resolves.toBeUndefined();
  });
});

describe('httpSink: options', () => {
  const url = 'https://hooks.example.com/orders';
  it.each([
    { name: 'missing url', options: { secret: SECRET }, path: ['url'] },
    { name: 'not a URL', options: { url: 'not a url', secret: SECRET }, path: ['url'] },
    { name: 'not http(s)', options: { url: 'ftp://hooks.example.com/', secret: SECRET }, path: ['url'] },
    { name: 'credentials in the URL', options: { url: 'https://u:p@hooks.example.com/', secret: SECRET }, path: ['url'] },
    { name: 'missing secret', options: { url }, path: ['secret'] },
    { name: 'bad secret', options: { url, secret: 'whsec_!!!' }, path: ['secret'] },
    { name: 'empty secret', options: { url, secret: 'whsec_' }, path: ['secret'] },
    { name: '1-byte secret', options: { url, secret: `whsec_${randomBytes(1).toString('base64')}` }, path: ['secret'] },
    { name: '15-byte secret', options: { url, secret: `whsec_${randomBytes(15).toString('base64')}` }, path: ['secret'] },
    { name: 'short secret in a rotation', options: { url, secret: [SECRET, `whsec_${randomBytes(8).toString('base64')}`] }, path: ['secret', 1] },
    { name: 'empty list of secrets', options: { url, secret: [] }, path: ['secret'] },
    { name: 'isPermanent not a function', options: { url, secret: SECRET, isPermanent: [410] }, path: ['isPermanent'] },
    { name: 'unknown option', options: { url, secret: SECRET, retries: 3 }, path: ['retries'] },
    { name: 'negative timeout', options: { url, secret: SECRET, timeoutMs: -1 }, path: ['timeoutMs'] },
    { name: 'zero timeout', options: { url, secret: SECRET, timeoutMs: 0 }, path: ['timeoutMs'] },
    { name: 'fractional timeout', options: { url, secret: SECRET, timeoutMs: 1.5 }, path: ['timeoutMs'] },
    { name: 'invalid header name', options: { url, secret: SECRET, headers: { 'a b': 'x' } }, path: ['headers'] },
    { name: 'header value not a string', options: { url, secret: SECRET, headers: { a: 1 } }, path: ['headers', 'a'] },
    { name: 'fetch not a function', options: { url, secret: SECRET, fetch: 'fetch' }, path: ['fetch'] },
  ])('refuses $name with InvalidOptionsError', ({ options, path }) => {
    let error: unknown;
    try {
      httpSink(options as never);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect((error as InvalidOptionsError).issues.map((issue) => issue.path)).toContainEqual(path);
  });

  it('accepts a secret of 16 bytes; the short-secret error says how to make a good one', () => {
    expect(typeof httpSink({ url, secret: `whsec_${randomBytes(16).toString('base64')}` })).toBe('function');
    expect(() => httpSink({ url, secret: `whsec_${randomBytes(15).toString('base64')}` })).toThrow(/at least 16 bytes.*pg-once webhook-secret/);
  });

  it('has a public option type in step with its schema', () => {
    expectTypeOf<HttpSinkOptions>().toEqualTypeOf<z.input<typeof httpSinkOptionsSchema>>();
  });

  it('never repeats a bad secret in the error, its issues or its cause', () => {
    const secret = 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ!!';
    let error: unknown;
    try {
      httpSink({ url, secret });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidOptionsError);
    const everything = JSON.stringify([(error as Error).message, (error as InvalidOptionsError).issues, String((error as Error).cause)]);
    expect(everything).not.toContain('c2VjcmV0LXNlY3JldC1zZWNyZXQ');
  });

  it('accepts a bare base64 secret and a custom fetch, and uses that fetch', async () => {
    const receiver = await startReceiver(answer(200));
    let calls = 0;
    const countingFetch: typeof fetch = (input, init) => {
      calls++;
      return fetch(input, init);
    };
    await httpSink({ url: receiver.url, secret: SECRET.slice('whsec_'.length), fetch: countingFetch })(makeEvent(), makeContext());
    expect(calls).toBe(1);
    const [received] = receiver.requests as [Received];
    expect(() => new Webhook(SECRET).verify(received.body, webhookHeaders(received))).not.toThrow();
  });

  it('warns at start when signed events would travel over plain http to another host', async () => {
    const warnings: string[] = [];
    const warn = (message: string) => warnings.push(message);
    await httpSink({ url: 'http://hooks.example.com/x', secret: SECRET }).start?.({ retryHorizonMs: 1, warn });
    expect(warnings).toEqual([expect.stringContaining('plain http')]);
    await httpSink({ url: 'http://127.0.0.1:1/x', secret: SECRET }).start?.({ retryHorizonMs: 1, warn });
    await httpSink({ url, secret: SECRET }).start?.({ retryHorizonMs: 1, warn });
    expect(warnings).toHaveLength(1);
  });
});
