/**
 * End to end: outbox -> relay -> HTTP sink -> a real receiver on loopback that verifies the
 * Standard Webhooks signature. Includes a relay process killed with SIGKILL mid-batch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { httpSink, listDeadEvents, requeueDeadEvents, startRelay, type Relay } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.ts';

let fx: AppFixture;
let relayUrl: string;
let receiver: WebhookReceiver;
const relays: Relay[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  fx = await createAppFixture(10);
  relayUrl = await fx.database.createLoginRole('relay');
});
afterAll(async () => {
  await fx?.close();
});
beforeEach(async () => {
  receiver = await startWebhookReceiver();
  await fx.database.admin.query('DELETE FROM once.outbox_events');
});
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(relays.splice(0).map((relay) => relay.stop()));
  await receiver.close();
});

async function relay(extra: { leaseMs?: number; maxAttempts?: number } = {}): Promise<Relay> {
  const started = await startRelay({
    connectionString: relayUrl,
    sinks: { '>': httpSink({ url: receiver.url, secret: receiver.secret, timeoutMs: 2_000 }) },
    backoff: { initialMs: 5, maxMs: 50 },
    handleSignals: false,
    logger: { warn: () => {}, error: () => {} },
    ...extra,
  });
  relays.push(started);
  return started;
}

async function relayProcess(leaseMs: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['test/fixtures/relay-process.ts'], {
    env: { ...process.env, DATABASE_URL: relayUrl, RECEIVER_URL: receiver.url, WEBHOOK_SECRET: receiver.secret, LEASE_MS: String(leaseMs) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  expect(line).toBe('STARTED');
  return child;
}

/** Every event reached the receiver, and every request for it carried its one dedupe id. */
function expectEachDeliveredUnderItsDedupeId(refs: { id: string; dedupeId: string }[]) {
  expect(receiver.unverified).toBe(0);
  const dedupeIds = new Set(refs.map((r) => r.dedupeId));
  for (const request of receiver.requests) {
    expect(request.webhookId).toBe(request.idempotencyKey);
    expect(request.webhookId).toBe(request.body.id);
    expect(dedupeIds.has(request.webhookId)).toBe(true);
  }
  expect(new Set(receiver.accepted.map((d) => d.webhookId))).toEqual(dedupeIds);
}

describe('relay -> HTTP sink -> receiver', () => {
  it('delivers 1,000 events of 10 tenants through a receiver failing 30% of requests, signed, under stable ids', async () => {
    receiver.respond = () => (Math.random() < 0.3 ? 500 : 200);
    const refs = await fillOutbox(fx.app, { count: 1_000, tenants: 10, topic: 'orders.created' });
    await relay();
    expect(await waitForOutbox(fx.database.admin, (c) => c.delivered === 1_000, 60_000)).toEqual({ pending: 0, delivered: 1_000, dead: 0 });
    expectEachDeliveredUnderItsDedupeId(refs);
    expect(receiver.requests.length).toBeGreaterThan(1_000); // the 500s were retried
    const retried = receiver.requests.filter((r, i, all) => all.findIndex((o) => o.webhookId === r.webhookId) !== i);
    expect(retried.length).toBeGreaterThan(0);
    expect(receiver.accepted[0]!.body).toMatchObject({ type: 'orders.created', data: { seq: expect.any(Number) } });
  });

  it('a 410 Gone answer makes the event dead after one attempt; requeue delivers it', async () => {
    const [ref] = await fillOutbox(fx.app, { count: 1, tenants: 1 });
    receiver.respond = () => 410;
    await relay();
    await waitForOutbox(fx.database.admin, (c) => c.dead === 1);
    const [dead] = await listDeadEvents(relayUrl);
    expect(dead).toMatchObject({ id: ref!.id, attempts: 1, lastError: expect.stringContaining('410') });
    receiver.respond = () => 200;
    await requeueDeadEvents(relayUrl, 'all');
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 1);
    expect(receiver.requests.map((r) => r.webhookId)).toEqual([ref!.dedupeId, ref!.dedupeId]);
  });

  it('a relay process killed with SIGKILL mid-batch strands nothing: a restarted relay delivers the rest', async () => {
    receiver.respond = async () => {
      await new Promise((resolve) => setTimeout(resolve, 3)); // keep deliveries in flight
      return 200;
    };
    const refs = await fillOutbox(fx.app, { count: 500, tenants: 5 });
    const leaseMs = 1_500;
    const doomed = await relayProcess(leaseMs);
    await waitForOutbox(fx.database.admin, (c) => c.delivered >= 100, 30_000);
    doomed.kill('SIGKILL');
    await once(doomed, 'exit');
    const { rows } = await fx.database.admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by IS NOT NULL AND status = 'pending'",
    );
    const stranded = rows[0]!.n;

    const killedAt = Date.now();
    await relayProcess(leaseMs);
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 500, 60_000);
    expectEachDeliveredUnderItsDedupeId(refs);
    // The killed relay's leased events came back after their lease, well within 30 s.
    expect(Date.now() - killedAt).toBeLessThan(30_000);
    expect(stranded).toBeGreaterThanOrEqual(0);
  });
});
