/**
 * The receiving side: verifyWebhook and receiveOnce, through the example receiver
 * (examples/inbox-receiver.ts) on a real HTTP port, and end to end from the relay's HTTP sink.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInboxReceiver, receivedEventsTable, storeReceivedEvent } from '../examples/inbox-receiver.ts';
import { enqueue, httpSink, startRelay, verifyWebhook, WebhookVerificationError, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';
import { TEST_WEBHOOK_SECRET } from './support/webhook-receiver.ts';

let fx: AppFixture;
let url: string;
let handled = 0;
let close: () => Promise<void>;

beforeAll(async () => {
  fx = await createAppFixture(16);
  await fx.database.admin.query(receivedEventsTable((await fx.database.roles())!.app));
  const server = createInboxReceiver({
    db: fx.app,
    secret: TEST_WEBHOOK_SECRET,
    handle: async (tx, webhook) => {
      handled += 1;
      return storeReceivedEvent(tx, webhook);
    },
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  close = async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
});
afterAll(async () => {
  await close?.();
  await fx?.close();
});

function signed(messageId: string, body: unknown, options: { secret?: string; at?: Date } = {}) {
  const text = JSON.stringify(body);
  const at = options.at ?? new Date();
  return {
    text,
    headers: {
      'content-type': 'application/json',
      'webhook-id': messageId,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1_000)),
      'webhook-signature': new Webhook(options.secret ?? TEST_WEBHOOK_SECRET).sign(messageId, at, text),
      'x-tenant-id': 'tenant-in',
    },
  };
}

const received = async (messageId: string) =>
  (await fx.database.admin.query('SELECT tenant_id, type FROM received_events WHERE message_id = $1', [messageId])).rows;

describe('verifyWebhook', () => {
  it('returns the webhook-id as the message id, and the payload', () => {
    const { text, headers } = signed('msg_1', { type: 'orders.created', data: { id: 1 } });
    const verified = verifyWebhook(headers, text, TEST_WEBHOOK_SECRET);
    expect(verified).toMatchObject({ messageId: 'msg_1', payload: { type: 'orders.created', data: { id: 1 } } });
  });

  it('refuses tampered bodies, wrong secrets, stale and future timestamps, missing headers, with coded errors', () => {
    const { text, headers } = signed('msg_2', { amount: 1 });
    const otherSecret = `whsec_${Buffer.from('another secret of 32 bytes!!!!!!').toString('base64')}`;
    const cases: Array<[string, () => unknown, string]> = [
      ['tampered body', () => verifyWebhook(headers, text.replace('1', '9'), TEST_WEBHOOK_SECRET), 'bad_signature'],
      ['wrong secret', () => verifyWebhook(headers, text, otherSecret), 'bad_signature'],
      ['stale', () => verifyWebhook(signed('msg_3', {}, { at: new Date(Date.now() - 3_600_000) }).headers, '{}', TEST_WEBHOOK_SECRET), 'stale_timestamp'],
      ['future', () => verifyWebhook(signed('msg_4', {}, { at: new Date(Date.now() + 3_600_000) }).headers, '{}', TEST_WEBHOOK_SECRET), 'future_timestamp'],
      ['missing headers', () => verifyWebhook({ 'webhook-id': 'x' }, text, TEST_WEBHOOK_SECRET), 'missing_headers'],
    ];
    for (const [label, run, reason] of cases) {
      let error: unknown;
      try {
        run();
      } catch (caught) {
        error = caught;
      }
      expect(error, label).toBeInstanceOf(WebhookVerificationError);
      expect(error, label).toMatchObject({ code: 'WEBHOOK_INVALID', httpStatus: 401, reason });
    }
  });
});

describe('the example inbox receiver', () => {
  it('processes the same signed webhook, sent 50 times concurrently, once', async () => {
    const { text, headers } = signed('msg_storm', { type: 'payments.charged', data: { amount: 4200 } });
    const before = handled;
    const responses = await Promise.all(Array.from({ length: 50 }, () => fetch(url, { method: 'POST', headers, body: text })));
    expect(responses.map((r) => r.status)).toEqual(Array(50).fill(200));
    const bodies = await Promise.all(responses.map((r) => r.json()));
    expect(new Set(bodies.map((b) => JSON.stringify(b)))).toEqual(new Set([JSON.stringify({ stored: 'msg_storm' })]));
    expect(handled - before).toBe(1);
    expect(await received('msg_storm')).toEqual([{ tenant_id: 'tenant-in', type: 'payments.charged' }]);
  });

  it('answers 401 and processes nothing for tampered, mis-signed or stale deliveries', async () => {
    const before = handled;
    const good = signed('msg_bad', { amount: 1 });
    const wrong = signed('msg_bad', { amount: 1 }, { secret: `whsec_${Buffer.from('another secret of 32 bytes!!!!!!').toString('base64')}` });
    const stale = signed('msg_bad', { amount: 1 }, { at: new Date(Date.now() - 600_000) });
    for (const [headers, body] of [
      [good.headers, good.text.replace('1', '2')],
      [wrong.headers, wrong.text],
      [stale.headers, stale.text],
    ] as const) {
      const response = await fetch(url, { method: 'POST', headers, body });
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({ error: 'WEBHOOK_INVALID' });
    }
    expect(handled).toBe(before);
    expect(await received('msg_bad')).toEqual([]);
  });

  it('round trip: outbox -> relay -> HTTP sink -> example receiver, each event processed once', async () => {
    const relayUrl = await fx.database.createLoginRole('relay');
    const ids: string[] = [];
    await withTenant(fx.app, 'tenant-in', async (tx) => {
      for (let i = 0; i < 20; i += 1) {
        const { dedupeId } = await enqueue(tx, { topic: 'orders.created', payload: { i }, headers: { 'x-tenant-id': 'tenant-in' } });
        ids.push(dedupeId);
      }
    });
    // A sink that delivers every event twice (as a retry after a lost response would).
    const sink = httpSink({ url, secret: TEST_WEBHOOK_SECRET });
    const twice = async (...args: Parameters<typeof sink>) => {
      await sink(...args);
      await sink(...args);
    };
    const before = handled;
    const relay = await startRelay({ connectionString: relayUrl, sinks: { '>': twice }, handleSignals: false });
    try {
      await waitForOutbox(fx.database.admin, (c) => c.delivered >= 20);
    } finally {
      await relay.stop();
    }
    expect(handled - before).toBe(20);
    const { rows } = await fx.database.admin.query('SELECT message_id FROM received_events WHERE message_id = ANY($1)', [ids]);
    expect(rows.map((r) => r.message_id).sort()).toEqual([...ids].sort());
  });
});
