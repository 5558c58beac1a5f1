/**
 * No connection can stall the relay: a relay whose database connections go silent (a TCP proxy
 * that stops forwarding bytes without closing anything) at the claim or at the settle times out,
 * drops those connections and goes on, or leaves its events to another relay; stop() returns
 * within shutdownTimeoutMs whatever the network does.
 */
import { afterAll, beforeEach, expect, it } from 'vitest';
import { type DeliveryEvent, type Relay, type RelayOptions, startRelay } from '../src/index.ts';
import { type BlackholeProxy, startBlackholeProxy } from './support/blackhole-proxy.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';

const setting = useRelayFixture();
const relays: Relay[] = [];
const proxies: BlackholeProxy[] = [];

afterAll(async () => {
  await Promise.all(relays.map((relay) => relay.stop()));
  await Promise.all(proxies.map((proxy) => proxy.close()));
});
beforeEach(async () => {
  await Promise.all(relays.splice(0).map((relay) => relay.stop()));
  await setting.fx.database.admin.query('DELETE FROM once.outbox_events');
});

const SHUTDOWN_TIMEOUT_MILLISECONDS = 1_000;

async function proxy(): Promise<BlackholeProxy> {
  const url = new URL(setting.relayUrl);
  const started = await startBlackholeProxy({ host: url.hostname, port: Number(url.port || 5432) });
  proxies.push(started);
  return started;
}

async function relay(connectionString: string, sink: (event: DeliveryEvent) => Promise<void>, options: Partial<RelayOptions> = {}): Promise<Relay> {
  const started = await startRelay({
    connectionString,
    sinks: { '>': sink },
    statementTimeoutMs: 500,
    leaseMs: 2_000,
    shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MILLISECONDS,
    ...QUIET_RELAY,
    ...options,
  });
  relays.push(started);
  return started;
}

/** 'stopped' if stop() returned within the shutdown timeout (plus slack for a loaded machine). */
async function stopOutcome(stopping: Relay): Promise<'stopped' | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    stopping.stop().then(() => 'stopped' as const),
    new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), SHUTDOWN_TIMEOUT_MILLISECONDS + 3_000))),
  ]);
  clearTimeout(timer);
  return outcome;
}

it('a claim whose connection goes silent times out; the relay drops the connection and delivers everything', async () => {
  const network = await proxy();
  const delivered = new Set<string>();
  const a = await relay(network.url(setting.relayUrl), async (event) => void delivered.add(event.id));
  // The relay polls every few milliseconds: the black hole swallows a claim in flight, or an idle
  // connection the next claim will use. New connections get through.
  network.blackhole();
  await fillOutbox(setting.fx.app, { count: 50, tenants: 2 });
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 50, 30_000);
  expect(delivered.size).toBe(50);
  expect(await stopOutcome(a)).toBe('stopped');
});

it('a settle whose connection goes silent for good: another relay delivers everything, and stop() returns', async () => {
  const refs = await fillOutbox(setting.fx.app, { count: 30, tenants: 2 });
  const network = await proxy();
  const delivered = new Set<string>();
  let darkened = false;
  const a = await relay(network.url(setting.relayUrl), async (event) => {
    delivered.add(event.id);
    if (!darkened) {
      darkened = true;
      // From the first outcome on, nothing A sends arrives: its settle goes into the black
      // hole, and so do its renewals, its claims and every connection it opens.
      network.blackhole({ newConnections: true });
    }
  });
  await waitForOutbox(setting.fx.database.admin, () => darkened);
  await relay(setting.relayUrl, async (event) => void delivered.add(event.id));
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 30, 30_000);
  expect(delivered).toEqual(new Set(refs.map((ref) => ref.id)));
  expect(await stopOutcome(a)).toBe('stopped');
});
