/**
 * The receiving side: verifyWebhook and receiveOnce, through the example receiver
 * (examples/inbox-receiver.ts) on a real HTTP port, and end to end from the relay's HTTP sink.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInboxReceiver, receivedEventsTable, storeReceivedEvent } from '../examples/inbox-receiver.ts';
import { enqueue, httpSink, InvalidOptionsError, receiveOnce, startRelay, verifyWebhook, WebhookVerificationError, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';
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

const secretOf = (bytes: number) => `whsec_${randomBytes(bytes).toString('base64')}`;
const OTHER_SECRET = `whsec_${Buffer.from('another secret of 32 bytes!!!!!!').toString('base64')}`;

/** A delivery as httpSink sends it: the tenant inside the signed body. */
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
    } as Record<string, string>,
  };
}

const received = async (messageId: string) =>
  (await fx.database.admin.query('SELECT tenant_id, type FROM received_events WHERE message_id = $1 ORDER BY tenant_id', [messageId])).rows;

describe('verifyWebhook', () => {
  it('returns the webhook-id as the message id, the signed tenant, and the payload', () => {
    const { text, headers } = signed('msg_1', { type: 'orders.created', tenant: 'acme', data: { id: 1 } });
    const verified = verifyWebhook(headers, text, TEST_WEBHOOK_SECRET);
    expect(verified).toMatchObject({ messageId: 'msg_1', tenant: 'acme', payload: { type: 'orders.created', data: { id: 1 } } });
  });

  it('refuses tampered bodies, wrong secrets, stale and future timestamps, missing headers, with coded errors', () => {
    const { text, headers } = signed('msg_2', { amount: 1, tenant: 'acme' });
    const cases: Array<[string, () => unknown, string]> = [
      ['tampered body', () => verifyWebhook(headers, text.replace('1', '9'), TEST_WEBHOOK_SECRET), 'bad_signature'],
      ['tampered tenant', () => verifyWebhook(headers, text.replace('acme', 'evil'), TEST_WEBHOOK_SECRET), 'bad_signature'],
      ['wrong secret', () => verifyWebhook(headers, text, OTHER_SECRET), 'bad_signature'],
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

  it('takes the tenant from the signed body only: none signed is refused unless the endpoint names its tenant', () => {
    const bare = signed('msg_5', { type: 'x' });
    expect(() => verifyWebhook({ ...bare.headers, 'x-tenant-id': 'acme' }, bare.text, TEST_WEBHOOK_SECRET)).toThrow(
      expect.objectContaining({ code: 'WEBHOOK_INVALID', reason: 'missing_tenant' }),
    );
    expect(verifyWebhook(bare.headers, bare.text, TEST_WEBHOOK_SECRET, { tenant: 'acme' }).tenant).toBe('acme');

    const forAcme = signed('msg_6', { tenant: 'acme' });
    expect(verifyWebhook({ ...forAcme.headers, 'x-tenant-id': 'evil' }, forAcme.text, TEST_WEBHOOK_SECRET).tenant).toBe('acme');
    expect(verifyWebhook(forAcme.headers, forAcme.text, TEST_WEBHOOK_SECRET, { tenant: 'acme' }).tenant).toBe('acme');
    expect(() => verifyWebhook(forAcme.headers, forAcme.text, TEST_WEBHOOK_SECRET, { tenant: 'evil' })).toThrow(
      expect.objectContaining({ code: 'WEBHOOK_INVALID', reason: 'wrong_tenant' }),
    );
  });

  it('accepts a list of secrets during a rotation: a signature by any of them verifies', () => {
    const [oldSecret, newSecret] = [secretOf(32), secretOf(32)];
    for (const secret of [oldSecret, newSecret]) {
      const { text, headers } = signed('msg_rot', { tenant: 'acme' }, { secret });
      expect(verifyWebhook(headers, text, [oldSecret, newSecret]).messageId).toBe('msg_rot');
    }
    // Several signatures in the header (a sender mid-rotation), only the second one known here.
    const both = signed('msg_rot2', { tenant: 'acme' }, { secret: oldSecret });
    both.headers['webhook-signature'] += ` ${new Webhook(newSecret).sign('msg_rot2', new Date(Number(both.headers['webhook-timestamp']) * 1_000), both.text)}`;
    expect(verifyWebhook(both.headers, both.text, newSecret).tenant).toBe('acme');
    expect(() => verifyWebhook(both.headers, both.text, [OTHER_SECRET])).toThrow(expect.objectContaining({ reason: 'bad_signature' }));
  });

  it.each([
    ['1 byte', secretOf(1)],
    ['15 bytes', secretOf(15)],
    ['not base64', 'whsec_!!!'],
    ['an empty list', []],
    ['a short one in a list', [TEST_WEBHOOK_SECRET, secretOf(8)]],
  ])('refuses a secret of %s with InvalidOptionsError, before looking at the delivery', (_label, secret) => {
    const { text, headers } = signed('msg_weak', { tenant: 'acme' }, typeof secret === 'string' && secret.length > 10 ? { secret } : {});
    let error: unknown;
    try {
      verifyWebhook(headers, text, secret);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS', issues: [expect.objectContaining({ path: expect.arrayContaining(['secret']) })] });
  });

  it('accepts a secret of exactly 16 bytes', () => {
    const secret = secretOf(16);
    const { text, headers } = signed('msg_16', { tenant: 'acme' }, { secret });
    expect(verifyWebhook(headers, text, secret).messageId).toBe('msg_16');
  });
});

describe('receiveOnce', () => {
  it("opens the transaction of the message's tenant: the same message id is its own in each tenant", async () => {
    const runs: string[] = [];
    const handle = (tenant: string) =>
      receiveOnce(fx.app, { messageId: 'msg_tenants', tenant }, async (tx) => {
        const { rows } = await sql<{ tenant: string }>`SELECT current_setting('once.tenant_id') AS tenant`.execute(tx);
        runs.push(rows[0]!.tenant);
        return { tenant };
      });
    expect(await handle('acme')).toEqual({ tenant: 'acme' });
    expect(await handle('acme')).toEqual({ tenant: 'acme' });
    expect(await handle('globex')).toEqual({ tenant: 'globex' });
    expect(runs).toEqual(['acme', 'globex']);
  });

  it('refuses a message without a valid id or tenant before anything runs', async () => {
    let ran = false;
    const fn = async () => (ran = true);
    expect(await errorOf(receiveOnce(fx.app, { messageId: '', tenant: 'acme' }, fn))).toMatchObject({ code: 'INVALID_KEY' });
    expect(await errorOf(receiveOnce(fx.app, { messageId: 'm', tenant: '' }, fn))).toMatchObject({ code: 'INVALID_TENANT' });
    expect(await errorOf(receiveOnce(fx.app, { messageId: 'm' } as never, fn))).toMatchObject({ code: 'INVALID_TENANT' });
    expect(ran).toBe(false);
  });
});

describe('the example inbox receiver', () => {
  it('processes the same signed webhook, sent 50 times concurrently, once', async () => {
    const { text, headers } = signed('msg_storm', { type: 'payments.charged', tenant: 'tenant-in', data: { amount: 4200 } });
    const before = handled;
    const send = () => fetch(url, { method: 'POST', headers, body: text });
    const responses = await Promise.all(Array.from({ length: 50 }, send));
    // A copy that finds the first one still running waits for it, within the pool's wait slots
    // (maxWaiting); one that finds no slot free is answered 503, retry later, as a sender would.
    // On a loaded machine the first copy runs long enough for that to happen: those are retried.
    const statuses = responses.map((r) => r.status);
    expect(statuses.every((status) => status === 200 || status === 503)).toBe(true);
    const refused = await Promise.all(responses.filter((r) => r.status === 503).map((r) => r.json()));
    for (const body of refused) expect(body).toEqual({ error: 'IDEMPOTENCY_IN_PROGRESS' });
    const retried = await Promise.all(refused.map(send));
    const answered = [...responses.filter((r) => r.status === 200), ...retried];
    expect(answered.map((r) => r.status)).toEqual(Array(50).fill(200));
    const bodies = await Promise.all(answered.map((r) => r.json()));
    expect(new Set(bodies.map((b) => JSON.stringify(b)))).toEqual(new Set([JSON.stringify({ stored: 'msg_storm' })]));
    expect(handled - before).toBe(1);
    expect(await received('msg_storm')).toEqual([{ tenant_id: 'tenant-in', type: 'payments.charged' }]);
  });

  it('a captured delivery replayed with another tenant header is filed under its signed tenant, and deduplicated', async () => {
    const { text, headers } = signed('msg_capture', { type: 'payments.charged', tenant: 'victim', data: { amount: 1 } });
    const before = handled;
    expect((await fetch(url, { method: 'POST', headers: { ...headers, 'x-tenant-id': 'victim' }, body: text })).status).toBe(200);
    for (const tenant of ['attacker', 'other', 'victim']) {
      const replay = await fetch(url, { method: 'POST', headers: { ...headers, 'x-tenant-id': tenant }, body: text });
      expect(replay.status).toBe(200);
    }
    expect(handled - before).toBe(1);
    expect(await received('msg_capture')).toEqual([{ tenant_id: 'victim', type: 'payments.charged' }]);
    // Re-signing the body for another tenant needs the secret: a swapped tenant does not verify.
    const swapped = await fetch(url, { method: 'POST', headers, body: text.replace('victim', 'attacker') });
    expect(swapped.status).toBe(401);
    expect(await received('msg_capture')).toEqual([{ tenant_id: 'victim', type: 'payments.charged' }]);
  });

  it('answers 401 and processes nothing for tampered, mis-signed, stale or tenant-less deliveries', async () => {
    const before = handled;
    const good = signed('msg_bad', { amount: 1, tenant: 'tenant-in' });
    const wrong = signed('msg_bad', { amount: 1, tenant: 'tenant-in' }, { secret: OTHER_SECRET });
    const stale = signed('msg_bad', { amount: 1, tenant: 'tenant-in' }, { at: new Date(Date.now() - 600_000) });
    const tenantless = signed('msg_bad', { amount: 1 });
    for (const [headers, body] of [
      [good.headers, good.text.replace('1', '2')],
      [wrong.headers, wrong.text],
      [stale.headers, stale.text],
      [{ ...tenantless.headers, 'x-tenant-id': 'tenant-in' }, tenantless.text],
    ] as const) {
      const response = await fetch(url, { method: 'POST', headers, body });
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({ error: 'WEBHOOK_INVALID' });
    }
    expect(handled).toBe(before);
    expect(await received('msg_bad')).toEqual([]);
  });

  it('round trip: outbox -> relay -> HTTP sink -> example receiver, each event processed once, in its tenant', async () => {
    const relayUrl = await fx.database.createLoginRole('relay');
    const ids: string[] = [];
    for (const tenant of ['tenant-a', 'tenant-b']) {
      await withTenant(fx.app, tenant, async (tx) => {
        for (let i = 0; i < 10; i += 1) {
          // A header naming another tenant changes nothing: the receiver reads the signed one.
          const { dedupeId } = await enqueue(tx, { topic: 'orders.created', payload: { i }, headers: { 'x-tenant-id': 'someone-else' } });
          ids.push(dedupeId);
        }
      });
    }
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
    const { rows } = await fx.database.admin.query(
      'SELECT tenant_id, count(*)::int AS n FROM received_events WHERE message_id = ANY($1) GROUP BY 1 ORDER BY 1',
      [ids],
    );
    expect(rows).toEqual([
      { tenant_id: 'tenant-a', n: 10 },
      { tenant_id: 'tenant-b', n: 10 },
    ]);
  });
});
