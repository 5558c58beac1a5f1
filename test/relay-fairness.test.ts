/**
 * Claims are fair across tenants: one tenant's backlog of 20,000 events does not hold back
 * another tenant's single event, whether it was waiting before the relay started or arrives in
 * the middle of the drain.
 */
import { expect, it } from 'vitest';
import { enqueue, startRelay, withTenant } from '../src/index.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';

const setting = useRelayFixture();

const BACKLOG = 20_000;

it(`a tenant's backlog of ${BACKLOG.toLocaleString('en-US')} events does not hold back another tenant's event`, async () => {
  // The backlog, written directly (as the superuser) for speed; all of it due before B's event.
  await setting.fx.database.admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
     SELECT 'tenant-a', 'a-' || i, 'backlog', jsonb_build_object('i', i) FROM generate_series(1, $1) i`,
    [BACKLOG],
  );
  const enqueueB = (payload: string) => withTenant(setting.fx.app, 'tenant-b', async (tx) => (await enqueue(tx, { topic: 'b', payload })).id);
  const waiting = await enqueueB('waiting before the relay started');

  const order: string[] = [];
  let arriving: string | undefined;
  const relay = await startRelay({
    connectionString: setting.relayUrl,
    ...QUIET_RELAY,
    sinks: {
      '>': async (event) => {
        order.push(event.id);
        // B's second event commits in the middle of the drain.
        if (order.length === 2_000) void enqueueB('arriving mid-drain').then((id) => (arriving = id));
      },
    },
  });
  try {
    await waitForOutbox(setting.fx.database.admin, () => arriving !== undefined && order.includes(arriving), 60_000);
  } finally {
    await relay.stop();
  }
  // Served among the first claims, not after A's 20,000: a global FIFO would put the first at
  // position 20,001 and the second after it.
  expect(order.indexOf(waiting)).toBeGreaterThanOrEqual(0);
  expect(order.indexOf(waiting)).toBeLessThan(1_000);
  expect(order.indexOf(arriving!) - 2_000).toBeLessThan(2_000);
  const { rows } = await setting.fx.database.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM once.outbox_events WHERE tenant_id = 'tenant-a' AND status = 'pending'",
  );
  expect(rows[0]!.n).toBeGreaterThan(BACKLOG / 2); // A's backlog was still large all along
});
